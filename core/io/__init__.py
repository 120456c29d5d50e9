"""Small helpers every stage uses, with no engine imports: file-named paths kept inside their
folder (`paths`), atomic writes and failed writes in words (`atomic`), memory-mapped Arrow
tables and row takes on them (`tables`) and the library versions a manifest or run records
(`versions`).
"""
