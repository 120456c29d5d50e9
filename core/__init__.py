"""dmtui's engine: loading, scoring, fusion and selection, export, training.

Usable without any UI; it never imports Textual or rich (tests/test_core_boundary.py).
"""
