"""The first rows of the loaded pairs, one line each."""

from __future__ import annotations

import pyarrow as pa
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from core.data.pairs import as_text

PREVIEW_ROWS = 1000


def one_line(value, width: int = 60) -> Text:
    """The field on one line, cut at `width`; a Text, since DataTable reads a str cell as markup."""
    text = " ".join(as_text(value).split())
    return Text(text if len(text) <= width else text[: width - 1] + "…")


class PairsPreview(DataTable):
    """A preview table; the full, virtualised examples table belongs to the curation screen.
    Enter opens the pair (the screen handles `RowSelected`); Home / End go to the first / last row."""

    BINDINGS = [Binding("home", "scroll_top", "First", show=False), Binding("end", "scroll_bottom", "Last", show=False)]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns("row", "pair_id", "prompt", "chosen", "rejected")

    def show(self, pairs: pa.Table) -> None:
        self.clear()
        head = pairs.slice(0, PREVIEW_ROWS).to_pylist()
        for pair in head:
            self.add_row(
                str(pair["row_index"]),
                pair["pair_id"],
                one_line(pair["prompt"]),
                one_line(pair["chosen"], 40),
                one_line(pair["rejected"], 40),
                key=pair["pair_id"],
            )
        shown = f"first {len(head):,} of {pairs.num_rows:,}" if pairs.num_rows > len(head) else f"{pairs.num_rows:,}"
        self.border_title = f"Pairs ({shown})"
