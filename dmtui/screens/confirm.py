"""A yes/no question before work starts or stops: Enter or y answers yes; n or Esc, no."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static


class ConfirmScreen(ModalScreen[bool]):
    CSS_PATH = Path(__file__).with_name("confirm.tcss")
    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, body: str, yes: str = "yes", no: str = "no") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Label(Text(self.title_text, style="bold"), id="confirm-title")
            yield Static(Text(self.body), id="confirm-body")  # names paths and models: not markup
            yield Label(Text.assemble(("Enter", "bold"), " or ", ("y", "bold"), f": {self.yes}    ",
                                      ("n", "bold"), " or ", ("Esc", "bold"), f": {self.no}"), id="confirm-keys")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
