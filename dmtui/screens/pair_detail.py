"""One pair up close: prompt, chosen and rejected side by side, differences marked,
every margin, and keys to flag, exclude, swap, note and undo.

Each annotation is written to the workspace's SQLite store the moment the key is
pressed (core.annotations commits with a full sync), so quitting, a crash or a killed
terminal loses none. `]` / `[` walk the list the screen was opened on (the examples
table's order, or the lowest margins in spot-check mode).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from core.annotations import AnnotationMasks, AnnotationStore
from core.errors import DmtuiError
from core.loading import LoadedDataset
from core.pairs import as_text
from core.selection import Selection

WORD = re.compile(r"\S+|\s+")


def marked_difference(chosen: str, rejected: str) -> tuple[Text, Text]:
    """The two texts with the words only one of them has highlighted."""
    left, right = WORD.findall(chosen), WORD.findall(rejected)
    chosen_text, rejected_text = Text(), Text()
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        same = tag == "equal"
        chosen_text.append("".join(left[a0:a1]), style=None if same else "bold black on green")
        rejected_text.append("".join(right[b0:b1]), style=None if same else "bold black on red")
    return chosen_text, rejected_text


class PairDetailScreen(Screen):
    CSS_PATH = Path(__file__).with_name("pair_detail.tcss")
    BINDINGS = [
        Binding("escape,q", "close", "Back"),
        Binding("right_square_bracket,right", "step(1)", "Next", key_display="]"),
        Binding("left_square_bracket,left", "step(-1)", "Prev", key_display="["),
        Binding("t", "flag('toxic')", "Toxic"),
        Binding("l", "flag('mislabeled')", "Mislabeled"),
        Binding("f", "flag('other')", "Other"),
        Binding("x", "toggle('excluded')", "Exclude"),
        Binding("s", "toggle('swapped')", "Swap"),
        Binding("n", "note", "Note"),
        Binding("u", "undo", "Undo"),
    ]

    def __init__(self, dataset: LoadedDataset, margins: dict[str, np.ndarray], selection: Selection | None,
                 store: AnnotationStore, annotations: AnnotationMasks, rows: np.ndarray, position: int,
                 title: str) -> None:
        super().__init__()
        self.dataset = dataset
        self.margins = margins
        self.selection = selection
        self.store = store
        self.annotations = annotations
        self.rows = rows
        self.position = position
        self.walk_title = title
        # Exclusions and swaps change the selection, which is recomputed on leaving.
        self.selection_changed = False
        self.pair_ids = dataset.pairs["pair_id"]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="pair-header")
        with VerticalScroll(id="pair-body"):
            yield Static(id="prompt")
            with Horizontal(id="responses"):
                yield Static(id="chosen")
                yield Static(id="rejected")
        yield Input(placeholder="note for this pair; Enter saves, Esc cancels", id="note")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#note").display = False
        self.show_pair()

    @property
    def index(self) -> int:
        return int(self.rows[self.position])

    def show_pair(self) -> None:
        index = self.index
        pair = self.dataset.pairs.slice(index, 1).to_pylist()[0]
        annotation = self.store.get(pair["pair_id"])
        swapped = annotation.swapped
        chosen, rejected = as_text(pair["chosen"]), as_text(pair["rejected"])
        if swapped:
            chosen, rejected = rejected, chosen
        chosen_text, rejected_text = marked_difference(chosen, rejected)
        self.query_one("#prompt", Static).update(Text(as_text(pair["prompt"])))
        self.query_one("#chosen", Static).update(chosen_text)
        self.query_one("#chosen").border_title = "chosen" + (" (swapped)" if swapped else "")
        self.query_one("#rejected", Static).update(rejected_text)
        self.query_one("#rejected").border_title = "rejected" + (" (swapped)" if swapped else "")
        self.query_one("#prompt").border_title = "prompt"

        header = Text()
        header.append(f"{self.walk_title}: {self.position + 1:,}/{len(self.rows):,}  ", style="bold")
        header.append(f"row {pair['row_index']}  pair {pair['pair_id']}  ")
        for name, margin in self.margins.items():
            value = -margin[index] if swapped else margin[index]
            header.append(f"{name} {value:+.3f}  " if np.isfinite(value) else f"{name} —  ")
        if self.selection is not None:
            if self.selection.score is not None and np.isfinite(self.selection.score[index]):
                header.append(f"score {self.selection.score[index]:.3f}  ")
            header.append("selected" if self.selection.mask[index] else "not selected",
                          style="green" if self.selection.mask[index] else "dim")
            if self.selection_changed:
                header.append(" (before your changes; updated when you go back)", style="dim")
        header.append("\n")
        header.append(f"flags: {', '.join(annotation.flags) or '—'}   excluded: {'yes' if annotation.excluded else 'no'}   "
                      f"swapped: {'yes' if swapped else 'no'}   note: {annotation.note or '—'}",
                      style="yellow" if not annotation.is_blank else "dim")
        self.query_one("#pair-header", Static).update(header)

    def _apply(self, **changes: object) -> None:
        index = self.index
        try:
            annotation = self.store.update(self.pair_ids[index].as_py(), **changes)
        except DmtuiError as error:  # a full disk or a read-only workspace: nothing was saved
            self._not_saved(error)
            return
        self.selection_changed |= "excluded" in changes or "swapped" in changes
        self._sync_arrays(annotation)
        self.show_pair()

    def _sync_arrays(self, annotation) -> None:
        self.annotations.set(self.pair_index_of(annotation.pair_id), annotation)

    def pair_index_of(self, pair_id: str) -> int:
        if self.pair_ids[self.index].as_py() == pair_id:
            return self.index
        import pyarrow.compute as pc

        return int(pc.index(self.pair_ids, pair_id).as_py())

    def action_flag(self, flag: str) -> None:
        """Add the flag, or take it off if the pair has it; the pair's other flags stay."""
        current = self.store.get(self.pair_ids[self.index].as_py())
        self._apply(flags=current.with_flag_toggled(flag).flags)
        if flag == "other" and flag not in current.flags:
            self.action_note()

    def action_toggle(self, field: str) -> None:
        current = self.store.get(self.pair_ids[self.index].as_py())
        self._apply(**{field: not getattr(current, field)})

    def action_note(self) -> None:
        note = self.query_one("#note", Input)
        note.value = self.store.get(self.pair_ids[self.index].as_py()).note
        note.display = True
        note.focus()

    @on(Input.Submitted, "#note")
    def _note_saved(self, event: Input.Submitted) -> None:
        event.input.display = False
        self._apply(note=event.value)

    def _not_saved(self, error: DmtuiError) -> None:
        self.notify(f"{error.message}\n{error.hint or ''}", title="Annotation not saved", severity="error",
                    timeout=15, markup=False)

    def action_undo(self) -> None:
        try:
            restored = self.store.undo()
        except DmtuiError as error:
            self._not_saved(error)
            return
        if restored is None:
            self.notify("Nothing to undo")
            return
        self._sync_arrays(restored)
        self.show_pair()
        self.notify(f"Undid the last change to pair {restored.pair_id}")

    def action_step(self, step: int) -> None:
        self.position = int(np.clip(self.position + step, 0, len(self.rows) - 1))
        self.show_pair()

    def action_close(self) -> None:
        note = self.query_one("#note", Input)
        if note.display:
            note.display = False
            return
        self.dismiss(None)
