"""Defaults the engine and the app share, in a module that imports nothing heavy.

The app reads them to fill its forms; importing core.models.logprobs for them would load torch
(over a second) before the first frame.
"""

DEFAULT_BATCH_TOKENS = 8192
"""Padded tokens per forward pass when scoring (core.models.logprobs halves it on out-of-memory)."""
