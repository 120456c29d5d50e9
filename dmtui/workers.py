"""How the app runs long work: engine calls in thread workers, and `dmtui` subcommands as
child processes that speak JSON lines (scoring, training).

A child process is the unit of work that can really be stopped: SIGTERM makes `dmtui
score` stop at the next chunk and `dmtui train` at the next step, each with its
checkpoint, and whatever it held (GPU memory included) is freed when it exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections.abc import AsyncIterator

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


def dmtui_command(*arguments: str) -> list[str]:
    """The command line of a `dmtui` subcommand run with this interpreter."""
    return [sys.executable, "-m", "dmtui", *arguments]


LINE_LIMIT = 64 * 1024 * 1024
"""The longest line read from a child (asyncio's default of 64 KiB is too short for a report)."""


class JsonlProcess:
    """A `dmtui … --jsonl` child: its events one by one, its last error line, a clean stop."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.process: asyncio.subprocess.Process | None = None
        self.stderr_tail = ""
        self.stopping = False

    async def events(self) -> AsyncIterator[dict]:
        """Start the child and yield each JSON object it prints; other lines as {"event": "text"}."""
        self.process = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=LINE_LIMIT)
        stderr_task = asyncio.create_task(self._read_stderr())
        try:
            async for raw in self.process.stdout:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    event = None
                yield event if isinstance(event, dict) else {"event": "text", "text": line}
        finally:
            await self.process.wait()
            await stderr_task

    async def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode("utf-8", errors="replace").strip()
            if line:
                self.stderr_tail = line

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def stop(self) -> None:
        """SIGTERM: the child stops at its next checkpoint boundary and exits 130."""
        if self.running:
            self.stopping = True
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, for a child that did not stop after SIGTERM: checkpoints written so far are kept."""
        if self.running:
            self.stopping = True
            self.process.kill()

    async def wait(self) -> None:
        if self.process is not None:
            await self.process.wait()
