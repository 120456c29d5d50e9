"""Pick which columns hold the prompt, chosen and rejected, for a file whose column names
are not the usual ones (`question` / `good` / `bad`): what `--prompt-col`, `--chosen-col`
and `--rejected-col` do on the command line. Posts `ColumnMapping.Chosen`."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Label, Select, Static

NO_PROMPT = "(none: the shared beginning of chosen and rejected)"
ROLES = ("prompt", "chosen", "rejected")


class ColumnMapping(Vertical):
    """One choice per role among the file's columns, and a button that loads with them."""

    @dataclass
    class Chosen(Message):
        """Role -> column; no 'prompt' key when the prompt is the shared beginning."""

        mapping: dict[str, str]

    def __init__(self, found: list[str], suggestion: dict[str, str], message: str, *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.found = found
        self.suggestion = suggestion
        self.message = message

    def compose(self) -> ComposeResult:
        yield Static(self.message, markup=False, id="mapping-message")
        for role in ROLES:
            options = [(column, column) for column in self.found]
            if role == "prompt":
                options.append((NO_PROMPT, NO_PROMPT))
            value = self.suggestion.get(role, NO_PROMPT if role == "prompt" else Select.BLANK)
            with Horizontal(classes="mapping-row"):
                yield Label(role, classes="mapping-role")
                yield Select(options, value=value, prompt="choose a column", compact=True, id=f"map-{role}")
        yield Button("Load with these columns", id="map-load", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#map-chosen" if "chosen" not in self.suggestion else "#map-load").focus()

    @on(Button.Pressed, "#map-load")
    def _load(self, event: Button.Pressed) -> None:
        event.stop()
        mapping: dict[str, str] = {}
        for role in ROLES:
            value = self.query_one(f"#map-{role}", Select).value
            if value == Select.BLANK:
                self.notify(f"Choose the column that holds {role}", severity="warning")
                return
            if value != NO_PROMPT:
                mapping[role] = str(value)
        if len(set(mapping.values())) < len(mapping):
            self.notify("Each role needs its own column", severity="warning")
            return
        self.post_message(self.Chosen(mapping))
