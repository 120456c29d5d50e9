"""How the app runs engine calls in background threads: progress, cancel, errors."""

from __future__ import annotations

import threading

from textual.message_pump import MessagePump

from core.errors import Cancelled, DmtuiError
from core.progress import ProgressFn
from dmtui.messages import WorkProgress


class WorkControl:
    """Cancel events and progress callbacks for a node's background work, by group."""

    def __init__(self, owner: MessagePump) -> None:
        self._owner = owner
        self._cancel_events: dict[str, threading.Event] = {}

    def start(self, group: str) -> tuple[ProgressFn, threading.Event]:
        """A progress callback that posts `WorkProgress` to the owner, and a fresh cancel event."""
        event = threading.Event()
        self._cancel_events[group] = event
        return (lambda progress: self._owner.post_message(WorkProgress(group, progress))), event

    def cancel_all(self) -> bool:
        """Ask every running piece of work to stop; True if there was any."""
        running = [event for event in self._cancel_events.values() if not event.is_set()]
        for event in running:
            event.set()
        return bool(running)


def describe_failure(error: BaseException | None) -> tuple[str, str | None, bool]:
    """(message, hint, was_cancelled) for a worker's error, for people rather than logs."""
    if isinstance(error, Cancelled):
        return error.message, None, True
    if isinstance(error, DmtuiError):
        return error.message, error.hint, False
    return f"{type(error).__name__}: {error}", "this is a bug in dmtui; please report it", False
