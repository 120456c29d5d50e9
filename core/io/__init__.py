"""Small helpers every stage uses, with no engine imports: file-named paths kept inside their
folder (`paths`), row takes on memory-mapped Arrow tables (`tables`) and the library versions
a manifest or run records (`versions`). Atomic writes still live in core.store.workspace.
"""
