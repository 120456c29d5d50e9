"""One pair up close: prompt, chosen and rejected side by side, differences marked,
every margin, and keys to flag, exclude, swap, note and undo.

Each annotation is written to the workspace's SQLite store the moment the key is
pressed (core.store.annotations commits with a full sync), so quitting, a crash or a killed
terminal loses none. `]` / `[` walk the list the screen was opened on (the examples
table's order, or the BOT region in spot-check mode).

Long pairs stay readable: the two responses scroll together in their own bordered
panes, so their chosen / rejected titles never leave the screen; the prompt shows its
last turn (`p` shows every turn); leading blank lines are dropped. The word diff runs
in a worker and fills the panes when it is done, so `]` never waits on it, and past
`DIFF_WORK_LIMIT` it compares lines instead of words (or marks nothing).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static
from textual.worker import get_current_worker

from core.data.loading import LoadedDataset
from core.data.pairs import as_text
from core.errors import DmtuiError
from core.selection.selector import Selection
from core.selection.views import (
    format_kept_value,
    kept_values,
    last_turn,
    prompt_turns,
    trim_leading_blank_lines,
    why_not_selected,
)
from core.store.annotations import AnnotationMasks, AnnotationStore

WORD = re.compile(r"\S+|\s+")
LINE = re.compile(r"[^\n]*\n|[^\n]+")
DIFF_WORK_LIMIT = 1_000_000
"""Largest product of the two token counts diffed (difflib is quadratic in the worst case)."""
KEPT_VALUE_CHARS = 40


def marked_difference(chosen: str, rejected: str) -> tuple[Text, Text]:
    """The two texts with the words only one of them has highlighted.

    Words while len(words(chosen)) * len(words(rejected)) <= DIFF_WORK_LIMIT, else whole
    lines under the same limit, else nothing is marked (a long reply must not hang the
    diff).
    """
    for pattern in (WORD, LINE):
        left, right = pattern.findall(chosen), pattern.findall(rejected)
        if len(left) * len(right) <= DIFF_WORK_LIMIT:
            break
    else:
        return Text(chosen), Text(rejected)
    chosen_text, rejected_text = Text(), Text()
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        same = tag == "equal"
        chosen_text.append("".join(left[a0:a1]), style=None if same else "bold black on green")
        rejected_text.append("".join(right[b0:b1]), style=None if same else "bold black on red")
    return chosen_text, rejected_text


class PairDetailScreen(Screen):
    CSS_PATH = Path(__file__).with_name("pair_detail.tcss")
    AUTO_FOCUS = ""  # nothing focused: the screen's keys act; the note takes text only after `n`
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
        Binding("p", "toggle_prompt", "Prompt"),
        Binding("down,j", "scroll_responses(1)", "Scroll", show=False),
        Binding("up,k", "scroll_responses(-1)", "Scroll up", show=False),
        Binding("pagedown,space", "scroll_responses(0.9)", "Page down", show=False),
        Binding("pageup", "scroll_responses(-0.9)", "Page up", show=False),
    ]

    @dataclass
    class DiffReady(Message):
        position: int
        chosen: Text
        rejected: Text

    def __init__(self, dataset: LoadedDataset, margins: dict[str, np.ndarray], selection: Selection | None,
                 store: AnnotationStore, annotations: AnnotationMasks, rows: np.ndarray, position: int,
                 title: str, effective: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.dataset = dataset
        self.margins = margins
        self.effective = effective if effective is not None else margins
        """The margins the selection used (swaps at the time it ran), for saying why."""
        self.selection = selection
        self.store = store
        self.annotations = annotations
        self.rows = rows
        self.position = position
        self.walk_title = title
        self.whole_prompt = False
        # Exclusions and swaps change the selection, which is recomputed on leaving.
        self.selection_changed = False
        self.pair_ids = dataset.pairs["pair_id"]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="pair-header")
        # Not focusable: the screen's keys scroll them (both responses together).
        with VerticalScroll(id="prompt-pane", can_focus=False):
            yield Static(id="prompt")
        with Horizontal(id="responses"):
            with VerticalScroll(id="chosen-pane", can_focus=False):
                yield Static(id="chosen")
            with VerticalScroll(id="rejected-pane", can_focus=False):
                yield Static(id="rejected")
        yield Input(placeholder="note for this pair; Enter saves, Esc cancels", id="note")
        yield Footer()

    def on_mount(self) -> None:
        self.show_pair()

    @property
    def index(self) -> int:
        return int(self.rows[self.position])

    def show_pair(self, *, texts: bool = True) -> None:
        """Draw the pair at `position`: the header always, the texts unless only the
        annotations changed (an edit must not reset the scroll or the diff)."""
        index = self.index
        pair = self.dataset.pairs.slice(index, 1).to_pylist()[0]
        annotation = self.store.get(pair["pair_id"])
        if texts:
            self._show_texts(pair, annotation.swapped)
        self.query_one("#pair-header", Static).update(self._header(index, pair, annotation))

    def _show_texts(self, pair: dict, swapped: bool) -> None:
        chosen = trim_leading_blank_lines(as_text(pair["chosen"]))
        rejected = trim_leading_blank_lines(as_text(pair["rejected"]))
        if swapped:
            chosen, rejected = rejected, chosen
        self._show_prompt(pair["prompt"])
        self.query_one("#chosen", Static).update(Text(chosen))
        self.query_one("#rejected", Static).update(Text(rejected))
        self.query_one("#chosen-pane").border_title = "chosen" + (" (swapped)" if swapped else "")
        self.query_one("#rejected-pane").border_title = "rejected" + (" (swapped)" if swapped else "")
        for pane in ("#chosen-pane", "#rejected-pane"):
            self.query_one(pane, VerticalScroll).scroll_home(animate=False)
        self.query_one("#chosen-pane").border_subtitle = "marking differences…"
        self._diff(self.position, chosen, rejected)

    def _show_prompt(self, prompt) -> None:
        pane = self.query_one("#prompt-pane")
        if self.whole_prompt:
            turns = prompt_turns(prompt)
            self.query_one("#prompt", Static).update(Text("\n\n".join(text for _, text in turns)))
            pane.border_title = f"prompt: all {len(turns)} turns"
            pane.border_subtitle = "p: last turn only" if len(turns) > 1 else ""
            return
        text, earlier = last_turn(prompt)
        self.query_one("#prompt", Static).update(Text(text))
        pane.border_title = "prompt" + (f": last turn of {earlier + 1}" if earlier else "")
        pane.border_subtitle = f"p: show the {earlier} earlier" if earlier else ""

    @work(thread=True, exclusive=True, exit_on_error=False, group="diff")
    def _diff(self, position: int, chosen: str, rejected: str) -> None:
        marked = marked_difference(chosen, rejected)
        if not get_current_worker().is_cancelled:
            self.post_message(self.DiffReady(position, *marked))

    @on(DiffReady)
    def _diff_ready(self, event: DiffReady) -> None:
        if event.position != self.position:
            return  # the user walked on; that pair's diff is on its way
        self.query_one("#chosen", Static).update(event.chosen)
        self.query_one("#rejected", Static).update(event.rejected)
        self.query_one("#chosen-pane").border_subtitle = "" if event.chosen.spans or event.rejected.spans else (
            "identical" if event.chosen.plain == event.rejected.plain else "too long to mark differences")

    def _header(self, index: int, pair: dict, annotation) -> Text:
        swapped = annotation.swapped
        header = Text()
        header.append(f"{self.walk_title}: {self.position + 1:,}/{len(self.rows):,}  ", style="bold")
        header.append(f"row {pair['row_index']}  pair {pair['pair_id']}")
        for name, value in kept_values(self.dataset, index).items():
            header.append(f"  {name} ", style="dim")
            header.append(format_kept_value(value, KEPT_VALUE_CHARS))
        header.append("\n")
        for name, margin in self.margins.items():
            value = -margin[index] if swapped else margin[index]
            header.append(f"{name} {value:+.3f}  " if np.isfinite(value) else f"{name} —  ")
        if self.selection is not None:
            score, log_odds = self.selection.score, self.selection.log_odds
            if score is not None and np.isfinite(score[index]):
                header.append(f"score {score[index]:.3f}  ")
            if log_odds is not None and np.isfinite(log_odds[index]):  # tells apart scores that round to 1
                header.append(f"log-odds {log_odds[index]:+.2f}  ")
            reason = why_not_selected(self.selection, index, self.effective, self.annotations.excluded)
            if reason is None:
                header.append("selected", style="green")
            else:
                header.append(f"not selected: {reason}", style="yellow")
            if self.selection_changed:
                header.append(" (before your changes; updated when you go back)", style="dim")
        header.append("\n")
        header.append(f"flags: {', '.join(annotation.flags) or '—'}   excluded: {'yes' if annotation.excluded else 'no'}   "
                      f"swapped: {'yes' if swapped else 'no'}   note: {annotation.note or '—'}",
                      style="yellow" if not annotation.is_blank else "dim")
        return header

    def _apply(self, **changes: object) -> None:
        index = self.index
        try:
            annotation = self.store.update(self.pair_ids[index].as_py(), **changes)
        except DmtuiError as error:  # a full disk or a read-only workspace: nothing was saved
            self._not_saved(error)
            return
        self.selection_changed |= "excluded" in changes or "swapped" in changes
        self._sync_arrays(annotation)
        self.show_pair(texts="swapped" in changes)

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
        note.add_class("open")
        self.set_focus(note)

    @on(Input.Submitted, "#note")
    def _note_saved(self, event: Input.Submitted) -> None:
        event.input.remove_class("open")
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

    def action_toggle_prompt(self) -> None:
        self.whole_prompt = not self.whole_prompt
        self.query_one("#prompt-pane").set_class(self.whole_prompt, "whole")
        self._show_prompt(self.dataset.pairs["prompt"][self.index].as_py())

    def action_scroll_responses(self, amount: float) -> None:
        """Scroll both responses together (the whole prompt instead, while it is shown):
        a whole `amount` is lines, a fraction is a share of the pane's height."""
        panes = ("#prompt-pane",) if self.whole_prompt else ("#chosen-pane", "#rejected-pane")
        for pane_id in panes:
            pane = self.query_one(pane_id, VerticalScroll)
            lines = amount if abs(amount) >= 1 else round(amount * max(pane.scrollable_content_region.height, 1))
            pane.scroll_to(y=pane.scroll_y + lines, animate=False)

    def action_close(self) -> None:
        note = self.query_one("#note", Input)
        if note.has_class("open"):
            note.remove_class("open")
            return
        self.dismiss(None)
