"""The user's choice of what model loading may do, off unless asked for.

Kept apart from core.models.load (which imports torch) so the app can hold and show it
without loading torch before its first frame. See core.models.load for how loading refuses
what is not allowed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelTrust:
    """What model loading may do beyond safetensors weights and transformers' own classes.

    Both are off unless the user passes the flag; the app carries one of these from
    `dmtui open` to every scoring and training run it starts, and says when either is on.
    """

    trust_remote_code: bool = False
    """Run Python code a checkpoint ships (``--trust-remote-code``)."""
    allow_pickle: bool = False
    """Load pickle weight files, which can run code when unpickled (``--allow-pickle``)."""

    def flags(self) -> list[str]:
        """The command-line flags that grant the same (for `dmtui train` subprocesses)."""
        return [
            flag
            for flag, on in (("--trust-remote-code", self.trust_remote_code), ("--allow-pickle", self.allow_pickle))
            if on
        ]

    def warning(self) -> str | None:
        """One line naming what is allowed, or None when loading is locked down."""
        allowed = [
            what
            for what, on in (
                ("remote code allowed (--trust-remote-code)", self.trust_remote_code),
                ("pickle weights allowed (--allow-pickle)", self.allow_pickle),
            )
            if on
        ]
        return "⚠ " + "; ".join(allowed) + ": models can run their own code" if allowed else None
