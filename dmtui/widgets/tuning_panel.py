"""Selection controls: mode, source, budget, and M1/M2 per margin source.

Every edit posts `TuningPanel.Changed` with the parsed values; a value that does not
parse is shown in red and not posted, so the last good selection stays on screen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Select

from core.errors import DmtuiError
from core.selection import MODES, parse_budget

MODE_LABELS = {
    "dm-mul": "DM-MUL (strict)",
    "dm-add": "DM-ADD (lenient)",
    "top": "TOP of one source",
    "mid": "MID of one source",
    "bot": "BOT of one source",
    "random": "Random",
    "low-gap": "Low-Gap (MID of ifd)",
}


class TuningPanel(Vertical):
    """The knobs of a selection, one per line."""

    @dataclass
    class Changed(Message):
        """Parsed settings: mode, source, budget, m1 and m2 per source."""

        settings: dict[str, Any]

    def __init__(self, sources: list[str], settings: dict[str, Any], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sources = sources
        self.initial = settings

    def compose(self) -> ComposeResult:
        settings = self.initial
        yield Select([(label, mode) for mode, label in MODE_LABELS.items() if mode in MODES],
                     value=settings.get("mode", "dm-mul"), allow_blank=False, compact=True, id="mode")
        yield Select([(name, name) for name in self.sources], value=settings.get("source", self.sources[0]),
                     allow_blank=False, compact=True, id="source")
        with Horizontal(classes="row"):
            yield Label("budget", classes="name")
            yield Input(str(settings.get("budget", "10%")), id="budget", placeholder="600 / 0.1 / 10%", compact=True)
        for name in self.sources:
            with Horizontal(classes="row"):
                yield Label(name[:8], classes="name")
                yield Input(str(settings.get("m1", {}).get(name, -2.0)), id=f"m1-{name}", classes="bound", compact=True,
                            tooltip=f"M1 of {name}: margins at or below it count as P = 0")
                yield Input(str(settings.get("m2", {}).get(name, "auto")), id=f"m2-{name}", classes="bound", compact=True,
                            tooltip=f"M2 of {name}: a number, or auto (sparse upper tail)")

    def on_mount(self) -> None:
        self._source_visibility()
        settings = self.read()
        if settings is not None:  # the owner starts from what the panel shows
            self.post_message(self.Changed(settings))

    def _source_visibility(self) -> None:
        mode = self.query_one("#mode", Select).value
        self.query_one("#source").display = mode in ("top", "mid", "bot")

    @on(Select.Changed)
    @on(Input.Changed)
    def _edited(self, event: Message) -> None:
        event.stop()
        if not self.is_attached or not self.query("#mode"):
            return  # a change queued while the panel is being removed (e.g. after rescoring)
        self._source_visibility()
        settings = self.read()
        if settings is not None:
            self.post_message(self.Changed(settings))

    def read(self) -> dict[str, Any] | None:
        """The current settings, or None if a field does not parse (it is marked)."""
        ok = True

        def field(widget_id: str, parse):
            nonlocal ok
            widget = self.query_one(f"#{widget_id}", Input)
            try:
                value = parse(widget.value)
            except (ValueError, DmtuiError):
                widget.add_class("invalid")
                ok = False
                return None
            widget.remove_class("invalid")
            return value

        def bound(text: str):
            return "auto" if text.strip() == "auto" else float(text)

        settings = {
            "mode": self.query_one("#mode", Select).value,
            "source": self.query_one("#source", Select).value,
            "budget": field("budget", lambda text: (parse_budget(text), text)[1]),
            "m1": {name: field(f"m1-{name}", float) for name in self.sources},
            "m2": {name: field(f"m2-{name}", bound) for name in self.sources},
        }
        return settings if ok else None
