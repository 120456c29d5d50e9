"""Which margin source to spot-check: a short list, Enter picks, Esc cancels."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual.widgets.option_list import Option


class SourcePicker(ModalScreen[str | None]):
    """Dismisses with the chosen source name, or None."""

    CSS_PATH = Path(__file__).with_name("source_picker.tcss")
    BINDINGS = [Binding("escape,q", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, sources: list[str], current: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.sources = sources
        self.current = current if current in sources else sources[0]

    def compose(self) -> ComposeResult:
        options = OptionList(*(Option(name, id=name) for name in self.sources), id="sources")
        options.border_title = self.title_text
        options.border_subtitle = "Enter picks · Esc cancels"
        yield options

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = self.sources.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
