"""Selection controls: mode, source, budget, trim, tau, seed, and per margin source
whether it is fused, its M1 / M2 and its weight.

The panel holds text, not parsed values: every edit posts `TuningPanel.Changed` with the
choices as typed (core.curation.session.SelectionChoices). Its owner parses them and hands the
problems back (`show_problems`): an invalid field turns red with the reason under it,
and the rest of the screen keeps working. Controls the mode ignores are hidden; modes
whose margin is missing are disabled in the list and say which margin they need.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select, Static
from textual.widgets._select import SelectOverlay

from core.curation.session import (
    FUSED_MODES,
    MISSING_MARGIN_HINT,
    MODE_DESCRIPTIONS,
    MODE_LABELS,
    SAMPLED_MODES,
    TRIMMED_MODES,
    ParsedChoices,
    SelectionChoices,
    default_fused,
    default_source,
    parse_mode,
)
from core.errors import DmtuiError
from core.selection.selector import DEFAULT_M1, DEFAULT_TAU, DEFAULT_TAU_OTHER, DEFAULT_TRIM, MODES, SINGLE_SOURCE_MODES
from dmtui.widgets.state_checkbox import StateCheckbox
from dmtui.widgets.static_text import update_text

MISSING_MARGIN_KEYS = "press 3, then S, to score the dataset (or open it with --margin); Random needs no margin"
"""The app's words for core.curation.session.MISSING_MARGIN_HINT: the keys first and short, so an
80x24 Curate tab shows them above the fold."""

TIE_LABELS = {"pair-id": "ties: pair_id (paper)", "margin-sum": "ties: margin sum"}


class TuningPanel(Vertical):
    """The knobs of a selection, one per line."""

    @dataclass
    class Changed(Message):
        """The choices as the controls now show them (not yet parsed)."""

        choices: SelectionChoices

    def __init__(self, sources: list[str], choices: SelectionChoices, requirements: dict[str, str | None], *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.sources = sources
        self.initial = choices
        self.requirements = requirements
        """Per mode, why it cannot run on these margins (None if it can)."""
        self._problems_shown: tuple | None = None
        self._mode_shown: str | None = None

    def compose(self) -> ComposeResult:
        choices = self.initial
        try:
            mode = parse_mode(choices.mode)
        except DmtuiError:
            mode = "dm-mul"
        options = [(f"{MODE_LABELS[m]}  {self._mode_remark(m)}", m) for m in MODES]
        yield Select(options, value=mode, allow_blank=False, compact=True, id="mode",
                     tooltip="\n".join(f"{MODE_LABELS[m]}: {MODE_DESCRIPTIONS[m]}" for m in MODES))
        yield Static("", id="problem-mode", classes="problem")
        if self.sources:
            source = choices.source if choices.source in self.sources else default_source(self.sources)
            yield Select([(name, name) for name in self.sources], value=source, allow_blank=False, compact=True,
                         id="source", classes="for-single")
        yield Static("", id="problem-source", classes="problem")
        yield from self._row("budget", "budget", choices.budget, "600 / 0.1 / 10%",
                             "pairs to keep: a count, a fraction of the eligible pairs, or a percentage")
        yield Static("", id="note-budget", classes="note")
        yield from self._row("trim", "trim", choices.trim, f"{DEFAULT_TRIM:.0%}",
                             f"outliers cut at each end before ranking (default {DEFAULT_TRIM:.0%}); "
                             "0 keeps the extremes", classes="for-trim")
        tau_default = ", ".join(f"{s} {DEFAULT_TAU.get(s, DEFAULT_TAU_OTHER):g}" for s in self.sources) or "1.0"
        yield from self._row("tau", "tau", choices.tau, f"default: {tau_default}",
                             "MID keeps |margin| <= tau; empty for the default (0.1 for ifd, 1.0 otherwise)",
                             classes="for-tau")
        yield from self._row("seed", "seed", choices.seed, "0", "seed of the random sample", classes="for-seed")
        fused = choices.fuse if choices.fuse is not None else default_fused(self.sources)
        with Vertical(id="source-rows", classes="for-fused"):
            with Horizontal(classes="row header"):
                yield Label("fuse", classes="fuse-name")
                yield Label("M1", classes="cell for-bounds")
                yield Label("M2", classes="cell for-bounds")
                yield Label("weight", classes="cell")
            for slot, name in enumerate(self.sources):  # ids by position: a source name may hold a "."
                with Horizontal(classes="row"):
                    yield StateCheckbox(name[:9], value=name in fused, compact=True, id=f"fuse-{slot}",
                                   classes="fuse-name", tooltip=f"fuse {name} (IFD only when asked)")
                    yield Input(choices.m1.get(name, ""), placeholder=f"{DEFAULT_M1:g}", id=f"m1-{slot}",
                                classes="cell for-bounds", compact=True,
                                tooltip=f"M1 of {name}: margins at or below it count as P = 0")
                    yield Input(choices.m2.get(name, ""), placeholder="auto", id=f"m2-{slot}",
                                classes="cell for-bounds", compact=True,
                                tooltip=f"M2 of {name}: a number, or auto (sparse upper tail)")
                    yield Input(choices.weights.get(name, ""), placeholder="1", id=f"weight-{slot}",
                                classes="cell", compact=True,
                                tooltip=f"weight of {name}: an exponent on its odds (DM-MUL), a factor (DM-ADD)")
                for kind in ("m1", "m2", "weight"):
                    yield Static("", id=f"problem-{kind}-{slot}", classes="problem")
        yield Static("", id="problem-fuse", classes="problem")
        ties = choices.saturated_ties if choices.saturated_ties in TIE_LABELS else "pair-id"
        yield Select([(label, key) for key, label in TIE_LABELS.items()], value=ties, allow_blank=False,
                     compact=True, id="saturated-ties", classes="for-mul",
                     tooltip="DM-MUL pairs whose fused score is the same (saturated at 1): pair_id decides (the "
                     "paper's formula), or the fused log-odds and then the sum of standardised margins")

    def _row(self, key: str, label: str, value: str, placeholder: str, tooltip: str,
             classes: str = "") -> ComposeResult:
        with Horizontal(classes=f"row {classes}".strip()):
            yield Label(label, classes="name")
            yield Input(value, placeholder=placeholder, id=key, compact=True, tooltip=tooltip)
        yield Static("", id=f"problem-{key}", classes="problem")

    def _mode_remark(self, mode: str) -> str:
        need = self.requirements.get(mode)
        if need:
            return "(needs " + ("ifd" if mode == "low-gap" else "margins") + ")"
        return ""

    def on_mount(self) -> None:
        overlay = self.query_one("#mode", Select).query_one(SelectOverlay)
        for index, mode in enumerate(MODES):
            if self.requirements.get(mode):
                overlay.disable_option_at_index(index)
        self._show_for_mode()
        self.post_message(self.Changed(self.read()))  # the owner starts from what the panel shows

    def _show_for_mode(self) -> None:
        """Show the controls the mode uses; nothing to do while the mode stays (most keystrokes)."""
        mode = str(self.query_one("#mode", Select).value)
        if mode == self._mode_shown:
            return
        self._mode_shown = mode
        visible = {
            "for-single": mode in SINGLE_SOURCE_MODES,
            "for-trim": mode in TRIMMED_MODES,
            "for-tau": mode in ("mid", "low-gap"),
            "for-seed": mode in SAMPLED_MODES,
            "for-fused": mode in FUSED_MODES and bool(self.sources),
            "for-bounds": mode == "dm-mul",
            "for-mul": mode == "dm-mul",
        }
        for name, shown in visible.items():
            for widget in self.query(f".{name}"):
                widget.display = shown

    @on(Select.Changed)
    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _edited(self, event: Message) -> None:
        event.stop()
        if not self.is_attached or not self.query("#mode"):
            return  # a change queued while the panel is being removed (e.g. after rescoring)
        self._show_for_mode()
        self.post_message(self.Changed(self.read()))

    def read(self) -> SelectionChoices:
        """The choices the controls show, as text."""
        def text(widget_id: str) -> str:
            return self.query_one(f"#{widget_id}", Input).value

        def per_source(kind: str) -> dict[str, str]:
            return {name: value for slot, name in enumerate(self.sources) if (value := text(f"{kind}-{slot}").strip())}

        fused = tuple(name for slot, name in enumerate(self.sources)
                      if self.query_one(f"#fuse-{slot}", Checkbox).value)
        sources = self.query("#source")
        return replace(
            self.initial,
            mode=str(self.query_one("#mode", Select).value),
            source=str(sources.first(Select).value) if sources else "",
            budget=text("budget"), trim=text("trim"), tau=text("tau"), seed=text("seed"),
            fuse=None if fused == default_fused(self.sources) else fused,
            m1=per_source("m1"), m2=per_source("m2"), weights=per_source("weight"),
            saturated_ties=str(self.query_one("#saturated-ties", Select).value),
        )

    def show_budget_note(self, text: str | None) -> None:
        """Say it under the budget when the selection had to take less than asked (clamped)."""
        note = self.query_one("#note-budget", Static)
        note.display = text is not None
        update_text(note, text or "")

    def show_problems(self, parsed: ParsedChoices) -> None:
        """Mark each control at fault red and write its reason under it; clear the others.

        Only controls the mode uses can be at fault (core.curation.session.parse_choices checks no
        other), so a reason never shows under a hidden control. The same problems as last
        time change nothing (most keystrokes): the widgets are not even looked up."""
        if parsed.problems == self._problems_shown:
            return
        self._problems_shown = parsed.problems
        controls = {name: name for name in ("mode", "source", "budget", "trim", "tau", "seed", "fuse")}
        controls |= {f"{kind}:{name}": f"{kind}-{slot}" for slot, name in enumerate(self.sources)
                     for kind in ("m1", "m2", "weight")}
        for key, control in controls.items():
            problem = parsed.problem_for(key)
            message = self.query_one(f"#problem-{control}", Static)
            message.display = problem is not None
            hint = MISSING_MARGIN_KEYS if problem is not None and problem.hint == MISSING_MARGIN_HINT \
                else problem.hint if problem is not None else None
            update_text(message, "" if problem is None else problem.message + (f": {hint}" if hint else ""))
            fields = self.query(f"#{control}")
            if fields and isinstance(fields.first(), Input):
                fields.first().set_class(problem is not None, "invalid")
