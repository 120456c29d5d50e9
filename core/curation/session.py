"""One curation session: a dataset, its margins and annotations, the user's selection
choices, the selection they make, and its export.

The app's Curate and Run tabs and the `select` / `export` commands all go through this
module, so what the screen shows is what the command line and the export do:

- `SelectionChoices` are the choices as a person types them (text per control). A
  workspace remembers them (settings.json, key "curation"); the app edits them; the
  command line starts from the workspace's and overrides them with its options
  (`merge_choices` says where each value came from).
- `parse_choices` turns them into `SelectionParams`, or into `Problem`s, one per control
  that is invalid or cannot apply (a mode whose margin is missing, an unknown source).
  Nothing is selected or exported while a problem stands.
- `CurationSession` holds the dataset, its margins, the annotation masks and the tie-break
  keys, and runs the selection, the comparisons and the export.

Margin sources: the paper's names and their defaults are in core.selection.selector
(`MARGIN_SOURCES`, `DEFAULT_M1`, the automatic M2, tau, trim). DM-MUL and DM-ADD fuse
every margin source except IFD unless told otherwise (`default_fused`): external and
implicit where they exist, plus any source the data brings under its own name. IFD is a
baseline of the paper and fused only when asked.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from core.data.loading import LoadConfig, LoadedDataset
from core.errors import DmtuiError
from core.export.exporter import Annotated, export_selection
from core.progress import ProgressFn
from core.selection.selector import (
    DEFAULT_M1,
    EXTERNAL,
    IFD,
    IMPLICIT,
    MODES,
    SATURATED_TIES,
    SINGLE_SOURCE_MODES,
    Mode,
    Overlap,
    Selection,
    SelectionError,
    SelectionParams,
    TopRanking,
    budget_text,
    overlap,
    parse_budget,
    select,
    tie_keys_from_pair_ids,
)
from core.store.annotations import FLAGS, SWAP_ANSWERS, AnnotationMasks, AnnotationStore
from core.store.margin_sources import MarginSpec, ResolvedMargins
from core.store.workspace import DatasetRef, Workspace

SETTINGS_KEY = "curation"
"""Where a workspace's settings.json keeps the selection choices."""

MODE_LABELS: dict[Mode, str] = {
    "dm-mul": "DM-MUL",
    "dm-add": "DM-ADD",
    "top": "TOP",
    "mid": "MID",
    "bot": "BOT",
    "random": "Random",
    "low-gap": "Low-Gap",
}
"""How the app names each mode; `parse_mode` accepts these and the ids, in any case."""

MODE_DESCRIPTIONS: dict[str, str] = {
    "dm-mul": "strict: a low margin from any fused source sinks the pair",
    "dm-add": "lenient: the sum of the fused margins",
    "top": "the highest margins of one source",
    "mid": "a random sample with |margin| <= tau, of one source",
    "bot": "the lowest margins of one source",
    "random": "a seeded random sample; needs no margin",
    "low-gap": "MID of IFD (chosen and rejected alike)",
}

FUSED_MODES = ("dm-mul", "dm-add")
TRIMMED_MODES = ("top", "mid", "bot", "low-gap")
SAMPLED_MODES = ("random", "mid", "low-gap")
DEFAULT_BUDGET = "10%"
DEFAULT_DROP_FLAGGED = ("toxic", "mislabeled")
"""Flags whose pairs an export leaves out unless told otherwise: a pair a curator marked
toxic, or mislabeled and did not swap, should not reach training. A swap answers the
mislabeled flag (core.store.annotations.SWAP_ANSWERS): the swapped pair is kept, the right way
round. `other` is a note-like mark and stays."""

Origin = Literal["default", "workspace", "option"]


def parse_mode(text: str) -> Mode:
    """A mode from its id or the app's label, in any case: 'dm-mul', 'DM-MUL', 'Low-Gap',
    'low_gap', 'DM-MUL (strict)'.

    >>> parse_mode("DM-MUL"), parse_mode("Low_Gap"), parse_mode(" top ")
    ('dm-mul', 'low-gap', 'top')
    """
    key = re.sub(r"\s*\(.*\)\s*$", "", text.strip()).lower().replace("_", "-").replace(" ", "-")
    for mode, label in MODE_LABELS.items():
        if key in (mode, label.lower()):
            return mode
    raise SelectionError(
        f"unknown mode {text!r}",
        hint="one of: "
        + ", ".join(f"{mode} ({label})" if label.lower() != mode else mode for mode, label in MODE_LABELS.items()),
    )


def parse_trim(text: str) -> float:
    """The TOP/MID/BOT outlier trim at each end: '1%' or a fraction such as 0.01, in [0, 50%).

    >>> parse_trim("1%"), parse_trim("0.05"), parse_trim("0")
    (0.01, 0.05, 0.0)
    """
    stripped = text.strip()
    percent = stripped.endswith("%")
    try:
        value = float(stripped[:-1] if percent else stripped)
    except ValueError:
        value = math.nan
    value = value / 100.0 if percent else value
    if not 0.0 <= value < 0.5:
        raise SelectionError(
            f"cannot use the trim {text!r}",
            hint="a share of the pairs cut at each end, from 0 up to 50%: 1%, 0.5% or 0",
        )
    return value


def _parse_number(text: str, what: str, *, allow_auto: bool = False, minimum: float | None = None) -> float | str:
    stripped = text.strip()
    if allow_auto and stripped.lower() == "auto":
        return "auto"
    try:
        value = float(stripped)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        wanted = "a number" + (" or auto" if allow_auto else "") + (f" >= {minimum:g}" if minimum is not None else "")
        raise SelectionError(f"{what} {text!r} is not {wanted}")
    return value


def default_source(sources: Sequence[str]) -> str | None:
    """The margin TOP/MID/BOT rank unless told: external, else implicit, else the first."""
    for name in (EXTERNAL, IMPLICIT):
        if name in sources:
            return name
    return sources[0] if sources else None


def default_fused(sources: Sequence[str]) -> tuple[str, ...]:
    """What DM-MUL and DM-ADD fuse unless told: every source but IFD."""
    return tuple(name for name in sources if name != IFD)


def _text(value: Any) -> str | None:
    """A stored value as the text a person would type; None for a wrong shape."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    return value if isinstance(value, str) else repr(value)


@dataclass(frozen=True)
class SelectionChoices:
    """A selection as a person chose it: the text of each control, before parsing.

    Empty or missing per-source entries mean the default for that source."""

    mode: str = "dm-mul"
    budget: str = DEFAULT_BUDGET
    source: str = ""
    """TOP / MID / BOT source; '' for `default_source`."""
    fuse: tuple[str, ...] | None = None
    """Sources DM-MUL / DM-ADD fuse; None for `default_fused`."""
    m1: Mapping[str, str] = field(default_factory=dict)
    m2: Mapping[str, str] = field(default_factory=dict)
    weights: Mapping[str, str] = field(default_factory=dict)
    tau: str = ""
    """'' for the default per source (0.1 for IFD, 1.0 otherwise)."""
    trim: str = "1%"
    seed: str = "0"
    saturated_ties: str = "pair-id"
    drop_flagged: tuple[str, ...] | None = None
    """Flags whose pairs an export leaves out; None for `DEFAULT_DROP_FLAGGED`."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mode": self.mode,
            "budget": self.budget,
            "source": self.source,
            "m1": dict(self.m1),
            "m2": dict(self.m2),
            "weights": dict(self.weights),
            "tau": self.tau,
            "trim": self.trim,
            "seed": self.seed,
            "saturated_ties": self.saturated_ties,
        }
        if self.fuse is not None:
            data["fuse"] = list(self.fuse)
        if self.drop_flagged is not None:
            data["drop_flagged"] = list(self.drop_flagged)
        return data

    @classmethod
    def from_json(cls, stored: Any, sources: Sequence[str]) -> SelectionChoices:
        """Remembered choices with anything of the wrong shape, or about a source that is not
        there any more, dropped (its default applies): settings.json is a file a person may
        edit, and a bad value must not stop the app opening."""
        if not isinstance(stored, Mapping):
            return cls()
        values: dict[str, Any] = {}
        for name in ("mode", "budget", "source", "tau", "trim", "seed", "saturated_ties"):
            text = _text(stored.get(name))
            if text is not None:
                values[name] = text
        if values.get("source") not in (None, "", *sources):
            del values["source"]
        for name in ("m1", "m2", "weights"):
            entries = stored.get(name)
            if isinstance(entries, Mapping):
                values[name] = {
                    key: text for key, value in entries.items() if key in sources and (text := _text(value)) is not None
                }
        fuse = stored.get("fuse")
        if isinstance(fuse, list) and all(isinstance(n, str) for n in fuse):
            values["fuse"] = tuple(n for n in fuse if n in sources)
        drop = stored.get("drop_flagged")
        if isinstance(drop, list) and all(f in FLAGS for f in drop):
            values["drop_flagged"] = tuple(drop)
        return cls(**values)


CHOICE_FIELDS = (
    "mode",
    "budget",
    "source",
    "fuse",
    "m1",
    "m2",
    "weights",
    "tau",
    "trim",
    "seed",
    "saturated_ties",
    "drop_flagged",
)


def merge_choices(
    stored: SelectionChoices | None, options: Mapping[str, Any]
) -> tuple[SelectionChoices, dict[str, Origin]]:
    """The workspace's remembered choices (None: ignore them) with command-line `options`
    (field -> value, per-source fields as mappings) on top, and where each value came from,
    by control ('budget', 'm1:external', ...)."""
    defaults = SelectionChoices()
    base = stored if stored is not None else defaults
    origins: dict[str, Origin] = {}
    values: dict[str, Any] = {}
    for name in CHOICE_FIELDS:
        mine = getattr(base, name)
        if name in ("m1", "m2", "weights"):
            merged = {**mine, **options.get(name, {})}
            values[name] = merged
            for source in merged:
                control = f"{name.rstrip('s')}:{source}"
                origins[control] = "option" if source in options.get(name, {}) else "workspace"
        else:
            values[name] = options[name] if name in options else mine
            if name in options:
                origins[name] = "option"
            elif stored is not None and mine != getattr(defaults, name):
                origins[name] = "workspace"
            else:
                origins[name] = "default"
    return SelectionChoices(**values), origins


@dataclass(frozen=True)
class Problem:
    """Why one control stops the selection: invalid, or unusable with this data."""

    control: str
    """'mode', 'source', 'budget', 'fuse', 'm1:SOURCE', 'm2:SOURCE', 'weight:SOURCE', 'tau',
    'trim', 'seed', 'saturated_ties' or 'drop_flagged'."""
    message: str
    hint: str | None = None

    def describe(self) -> str:
        return f"{self.control}: {self.message}"


@dataclass(frozen=True)
class ParsedChoices:
    """Choices parsed against the margin sources at hand."""

    choices: SelectionChoices
    params: SelectionParams | None
    """None while any problem stands."""
    problems: tuple[Problem, ...]
    notes: tuple[str, ...]
    """Remarks that do not stop anything (e.g. DM-MUL of one source is a clipped TOP)."""
    drop_flagged: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_for(self, control: str) -> Problem | None:
        return next((p for p in self.problems if p.control == control), None)

    def error(self) -> DmtuiError:
        """All problems as one error for the command line."""
        first = self.problems[0]
        if len(self.problems) == 1:
            return SelectionError(first.describe(), hint=first.hint)
        text = "; ".join(p.describe() for p in self.problems)
        hints = "; ".join(p.hint for p in self.problems if p.hint)
        return SelectionError(f"{len(self.problems)} settings cannot be used: {text}", hint=hints or None)


def mode_requirement(mode: Mode, sources: Sequence[str]) -> str | None:
    """Why `mode` cannot run on these margin sources, naming the margin it needs; None if it can."""
    if mode == "random":
        return None
    if mode == "low-gap":
        if IFD not in sources:
            return "Low-Gap needs the ifd margin, which is not here"
        return None
    if not sources:
        return f"{MODE_LABELS[mode]} needs margins, and there are no margin sources"
    if mode in FUSED_MODES and not default_fused(sources):
        return f"{MODE_LABELS[mode]} fuses external and implicit margins; there is only {', '.join(sources)}"
    return None


MISSING_MARGIN_HINT = (
    "score the dataset (the Score tab, or `dmtui score`), or give a margin the data has with "
    "--margin NAME=COLUMN (or NAME=CHOSEN_COL,REJECTED_COL); Random needs no margin"
)
"""The hint of a mode whose margin is missing (the app says it in keys: the Curate tab)."""


def parse_choices(choices: SelectionChoices, sources: Sequence[str]) -> ParsedChoices:
    """Parse and check every control the chosen mode uses against the margin `sources`."""
    problems: list[Problem] = []
    notes: list[str] = []

    def attempt(control: str, parse, *args, **kwargs):
        try:
            return parse(*args, **kwargs)
        except DmtuiError as error:
            problems.append(Problem(control, error.message, error.hint))
            return None

    for name in ("m1", "m2", "weights"):  # a misspelled source on the command line is an error, not a no-op
        for source in getattr(choices, name):
            if source not in sources:
                problems.append(
                    Problem(
                        f"{name.rstrip('s')}:{source}",
                        f"there is no margin source {source!r}",
                        f"margin sources: {', '.join(sources) or 'none'}",
                    )
                )

    mode = attempt("mode", parse_mode, choices.mode)
    budget = attempt("budget", parse_budget, choices.budget)
    drop = choices.drop_flagged if choices.drop_flagged is not None else DEFAULT_DROP_FLAGGED
    unknown_flags = [f for f in drop if f not in FLAGS]
    if unknown_flags:
        problems.append(
            Problem(
                "drop_flagged", f"unknown flag(s) {', '.join(unknown_flags)}", f"flags: {', '.join(FLAGS)}, or none"
            )
        )
    if mode is None:
        return ParsedChoices(choices, None, tuple(problems), (), tuple(drop))
    need = mode_requirement(mode, sources)
    if need:
        problems.append(Problem("mode", need, MISSING_MARGIN_HINT))

    options: dict[str, Any] = {"mode": mode, "budget": budget, "sources": ()}
    if mode in SINGLE_SOURCE_MODES:
        source = choices.source or default_source(sources)
        if source and source not in sources:
            problems.append(
                Problem(
                    "source", f"there is no margin source {source!r}", f"margin sources: {', '.join(sources) or 'none'}"
                )
            )
        options["source"] = source
    if mode in FUSED_MODES and not need:
        fused = choices.fuse if choices.fuse is not None else default_fused(sources)
        missing = [name for name in fused if name not in sources]
        if missing:
            problems.append(
                Problem(
                    "fuse",
                    f"there is no margin source {', '.join(map(repr, missing))} to fuse",
                    f"margin sources: {', '.join(sources)}",
                )
            )
        elif not fused:
            problems.append(Problem("fuse", "no margin source is chosen to fuse", "tick at least one source"))
        options["sources"] = tuple(fused)
        weights = {
            name: attempt(f"weight:{name}", _parse_number, choices.weights[name], f"the weight of {name}", minimum=0.0)
            for name in fused
            if choices.weights.get(name, "").strip()
        }
        if fused and not missing and all(weights.get(name, 1.0) == 0.0 for name in fused):
            problems.append(
                Problem(
                    f"weight:{fused[0]}",
                    "every fused source has weight 0",
                    "give at least one source a positive weight",
                )
            )
        if any(w not in (None, 1.0) for w in weights.values()):
            options["weights"] = {name: w for name, w in weights.items() if w is not None}
        if len(fused) == 1 and not missing:
            notes.append(
                f"{MODE_LABELS[mode]} of one source ({fused[0]}) is "
                + (
                    "a TOP clipped to [M1, M2]: every pair at or above M2 ties, and pair_id decides"
                    if mode == "dm-mul"
                    else "TOP of it without the outlier trim"
                )
            )
    if mode == "dm-mul":
        m1: dict[str, float] = {}
        m2: dict[str, float | str] = {}
        for name in options["sources"]:
            low = attempt(f"m1:{name}", _parse_number, choices.m1.get(name) or repr(DEFAULT_M1), f"M1 of {name}")
            high = attempt(
                f"m2:{name}", _parse_number, choices.m2.get(name) or "auto", f"M2 of {name}", allow_auto=True
            )
            if low is not None:
                m1[name] = float(low)
            if high is not None:
                m2[name] = high
            if isinstance(low, float) and isinstance(high, float) and not high > low:
                problems.append(
                    Problem(
                        f"m2:{name}",
                        f"M2 ({high:g}) must be greater than M1 ({low:g})",
                        "raise M2, lower M1, or set M2 to auto",
                    )
                )
        options["m1"], options["m2"] = m1, m2
        ties = choices.saturated_ties.strip().lower()
        if ties not in SATURATED_TIES:
            problems.append(
                Problem(
                    "saturated_ties", f"unknown rule {choices.saturated_ties!r}", f"one of: {', '.join(SATURATED_TIES)}"
                )
            )
        options["saturated_ties"] = ties
    if mode in TRIMMED_MODES:
        options["trim"] = attempt("trim", parse_trim, choices.trim)
    if mode in ("mid", "low-gap") and choices.tau.strip():
        options["tau"] = attempt("tau", _parse_number, choices.tau, "tau", minimum=0.0)
    if mode in SAMPLED_MODES:
        seed = choices.seed.strip()
        if not seed.isdigit():
            problems.append(Problem("seed", f"the seed {choices.seed!r} is not a whole number >= 0"))
        options["seed"] = int(seed) if seed.isdigit() else 0
    if problems:
        return ParsedChoices(choices, None, tuple(problems), tuple(notes), tuple(drop))
    try:
        params = SelectionParams(**{k: v for k, v in options.items() if v is not None})
    except DmtuiError as error:  # a combination the checks above do not know
        return ParsedChoices(choices, None, (Problem("mode", error.message, error.hint),), tuple(notes), tuple(drop))
    return ParsedChoices(choices, params, (), tuple(notes), tuple(drop))


def used_controls(params: SelectionParams, drop_flagged: Sequence[str] | None = None) -> dict[str, str]:
    """The controls a selection used, with their values as text (what a summary names)."""
    used: dict[str, str] = {"mode": MODE_LABELS[params.mode]}
    used["budget"] = budget_text(params.budget)
    if params.mode in SINGLE_SOURCE_MODES:
        used["source"] = str(params.source)
    if params.mode in FUSED_MODES:
        used["fuse"] = ", ".join(params.sources)
        for name in params.sources:
            if params.weight_for(name) != 1.0:
                used[f"weight:{name}"] = f"{params.weight_for(name):g}"
    if params.mode == "dm-mul":
        for name in params.sources:
            used[f"m1:{name}"] = f"{params.m1_for(name):g}"
            m2 = params.m2_for(name)
            used[f"m2:{name}"] = m2 if m2 == "auto" else f"{m2:g}"
        used["saturated_ties"] = params.saturated_ties
    if params.mode in TRIMMED_MODES:
        used["trim"] = f"{params.trim * 100:g}%"
    if params.mode in ("mid", "low-gap"):
        used["tau"] = f"{params.tau_for(IFD if params.mode == 'low-gap' else str(params.source)):g}"
    if params.mode in SAMPLED_MODES:
        used["seed"] = str(params.seed)
    if drop_flagged is not None:
        used["drop_flagged"] = ", ".join(drop_flagged) or "none"
    return used


def margin_specs_for(workspace: Workspace | None, given: Sequence[MarginSpec]) -> list[MarginSpec]:
    """The margin sources of a session: `given` (or, when none are given, the ones the
    workspace remembers from `dmtui open --margin`), then every score table of the
    workspace whose source is not named yet (its newest table)."""
    from core.store.scores import list_score_tables

    specs = list(given)
    if not specs and workspace is not None:
        remembered = workspace.read_settings().get("margins", [])
        if isinstance(remembered, list):
            specs = [MarginSpec.parse(text) for text in remembered if isinstance(text, str)]
    named = {spec.name for spec in specs}
    if workspace is not None:
        for info in list_score_tables(workspace.scores_dir):
            if info.source not in named:
                specs.append(MarginSpec(info.source))
                named.add(info.source)
    return specs


def kept_flag_counts(flagged_written: Mapping[str, int], spared: int) -> dict[str, int]:
    """The flags an export keeps that a person should be warned about: every flag of the
    written pairs, less the mislabeled flags a swap answered (`spared` pairs)."""
    counts = {flag: n - (spared if flag in SWAP_ANSWERS else 0) for flag, n in flagged_written.items()}
    return {flag: n for flag, n in counts.items() if n}


@dataclass(frozen=True)
class ExportPlan:
    """What an export of a selection will write, said before it writes."""

    params: SelectionParams
    selected: int
    dropped: int
    """Selected pairs left out for their flags."""
    spared: int
    """Selected pairs kept although they carry a dropped flag, because their swap answered it."""
    written: int
    drop_flagged: tuple[str, ...]
    flagged_written: dict[str, int]
    """Pairs of the export that carry each flag (those `drop_flagged` keeps)."""
    flagged_dropped: dict[str, int]
    bounds: dict[str, tuple[float, float, bool]]
    """dm-mul: (M1, M2, M2 automatic) per fused source."""
    trim_range: tuple[float, float] | None

    def lines(self) -> list[str]:
        """The plan in words, a line per fact."""
        used = used_controls(self.params)
        what = used["mode"] + (f" of {used['source']}" if "source" in used else "")
        if "fuse" in used:
            fused = ", ".join(
                f"{n}×{self.params.weight_for(n):g}" if self.params.weight_for(n) != 1.0 else n
                for n in self.params.sources
            )
            what += f" fusing {fused}"
        lines = [f"{what}; budget {used['budget']} -> {self.selected:,} pairs selected"]
        for name, (m1, m2, auto) in self.bounds.items():
            lines.append(f"{name}: M1 {m1:g}, M2 {m2:g}{' (auto)' if auto else ''}")
        if self.params.mode == "dm-mul" and self.params.saturated_ties != "pair-id":
            lines.append(f"saturated ties broken by {self.params.saturated_ties}")
        if self.trim_range is not None:
            lines.append(
                f"trim {self.params.trim * 100:g}% at each end: keeps margins in "
                f"[{self.trim_range[0]:.4g}, {self.trim_range[1]:.4g}]"
            )
        drop = ", ".join(self.drop_flagged) or "none"
        if self.dropped:
            counts = ", ".join(f"{flag} {n}" for flag, n in self.flagged_dropped.items() if n)
            lines.append(f"drops {self.dropped:,} flagged pairs ({counts}); writes {self.written:,}")
        else:
            lines.append(f"drops pairs flagged: {drop} (none selected); writes {self.written:,}")
        if self.spared:
            lines.append(f"keeps mislabeled pairs the curator swapped (the swap fixed them): {self.spared:,}")
        kept = kept_flag_counts(self.flagged_written, self.spared)
        if kept:
            lines.append(
                "warning: the export keeps flagged pairs: " + ", ".join(f"{flag} {n}" for flag, n in kept.items())
            )
        return lines


_DROPPED_BIT = 1 << len(FLAGS)
_SPARED_BIT = _DROPPED_BIT << 1
_ALL_CODES = np.arange(_SPARED_BIT << 1)
"""Every value of a pair's flag byte (`CurationSession._flag_codes`)."""


class CurationSession:
    """A dataset with its margins and annotations, ready to select from and export.

    The annotation masks are the app's working copy: the pair view writes each change to
    the store and to these masks (`AnnotationMasks.set`), so they stay in step."""

    def __init__(
        self,
        dataset: LoadedDataset,
        resolved: ResolvedMargins,
        annotations: AnnotationMasks | None = None,
        *,
        workspace: Workspace | None = None,
        dataset_ref: DatasetRef | None = None,
        load_config: LoadConfig | None = None,
    ) -> None:
        self.dataset = dataset
        self.resolved = resolved
        self.margins = resolved.margins
        self.sources = list(resolved.margins)
        self.workspace = workspace
        self.dataset_ref = dataset_ref if dataset_ref is not None else (workspace.dataset if workspace else None)
        self.load_config = (
            load_config if load_config is not None else (workspace.load_config if workspace else LoadConfig())
        )
        self.pair_ids = dataset.pairs["pair_id"].combine_chunks()
        self.tie_keys = tie_keys_from_pair_ids(self.pair_ids)
        self.annotations = annotations if annotations is not None else AnnotationMasks.empty(len(self.pair_ids))
        self._effective: dict[str, tuple[int, np.ndarray]] = {}
        self._tops: dict[str, tuple[float, int, TopRanking]] = {}
        """Per source, the TOP ranking of the last trim asked, with the annotations' version it saw."""
        self._codes: dict[tuple[str, ...], tuple[int, np.ndarray]] = {}
        """Per set of dropped flags, `_flag_codes` with the annotations' version it saw."""

    @classmethod
    def from_workspace(
        cls, dataset: LoadedDataset, resolved: ResolvedMargins, workspace: Workspace | None, **kwargs: Any
    ) -> CurationSession:
        """A session whose annotations are read from the workspace's store (none without one)."""
        annotations = None
        if workspace is not None and workspace.annotations_path.exists():
            with AnnotationStore(workspace.annotations_path) as store:
                annotations = store.masks(dataset.pairs["pair_id"])
        return cls(dataset, resolved, annotations, workspace=workspace, **kwargs)

    @property
    def total(self) -> int:
        return len(self.pair_ids)

    # Choices --------------------------------------------------------------------------
    def stored_choices(self) -> SelectionChoices:
        """The choices the workspace remembers (defaults without a workspace)."""
        if self.workspace is None:
            return SelectionChoices()
        return SelectionChoices.from_json(self.workspace.read_settings().get(SETTINGS_KEY), self.sources)

    def parse(self, choices: SelectionChoices) -> ParsedChoices:
        return parse_choices(choices, self.sources)

    def mode_requirements(self) -> dict[str, str | None]:
        """Per mode, why it cannot run here (None if it can)."""
        return {mode: mode_requirement(mode, self.sources) for mode in MODES}

    # Selection ------------------------------------------------------------------------
    def select(self, params: SelectionParams) -> Selection:
        """`select` with the curator's exclusions and swaps and pair_id tie-breaking."""
        if self.total == 0:
            raise SelectionError(
                f"no usable pairs in {self.dataset.report.source}: nothing to select from",
                self.dataset.report.nothing_usable_hint(),
            )
        return select(
            self.margins,
            params,
            excluded=self.annotations.excluded,
            swapped=self.annotations.swapped,
            tie_break=self.tie_keys,
        )

    def effective_margin(self, source: str) -> np.ndarray:
        """A source's margins as selection sees them: negated for swapped pairs. Cached until
        the annotations change; do not write to it."""
        version = self.annotations.version
        cached = self._effective.get(source)
        if cached is None or cached[0] != version:
            margin = self.margins[source]
            swapped = self.annotations.swapped
            cached = (version, np.where(swapped, -margin, margin) if swapped.any() else margin)
            self._effective[source] = cached
        return cached[1]

    def top_overlaps(self, selection: Selection) -> dict[str, Overlap]:
        """How the selection compares with External TOP and Implicit TOP at the same budget
        and trim (what fusion changed), for the sources that exist. Those TOPs depend on
        their source, the budget, the trim and the exclusions and swaps only: each
        source's ranking is kept until the trim or the annotations change, so an edit of
        the fusion costs nothing here and one of the budget a threshold."""
        found: dict[str, Overlap] = {}
        for source in (EXTERNAL, IMPLICIT):
            if source not in self.margins:
                continue
            if selection.params.mode == "top" and selection.params.source == source:
                continue
            top = self._top_ranking(source, selection.params.trim).indices(selection.params.budget)
            found[f"top:{source}"] = overlap(selection, top)
        return found

    def _top_ranking(self, source: str, trim: float) -> TopRanking:
        version = self.annotations.version
        cached = self._tops.get(source)
        if cached is not None and cached[:2] == (trim, version):
            return cached[2]
        ranking = TopRanking(
            source,
            self.margins[source],
            trim,
            excluded=self.annotations.excluded,
            swapped=self.annotations.swapped,
            tie_break=self.tie_keys,
        )
        self._tops[source] = (trim, version, ranking)
        return ranking

    def flag_counts(self, indices: np.ndarray) -> dict[str, int]:
        """How many of the pairs at `indices` carry each flag."""
        return self._flag_counts_of(self._code_counts(indices, ()))

    # Export ---------------------------------------------------------------------------
    def annotated(self) -> Annotated:
        """The annotations of the loaded pairs as an export records them."""
        masks = self.annotations

        def ids(mask: np.ndarray) -> list[str]:
            return self.pair_ids.filter(pa.array(mask)).to_pylist()

        flags: dict[str, tuple[str, ...]] = {}
        for flag in FLAGS:
            for pair_id in ids(masks.flags[flag]):
                flags[pair_id] = (*flags.get(pair_id, ()), flag)
        notes = {self.pair_ids[index].as_py(): note for index, note in masks.notes.items() if note}
        return Annotated(
            excluded=tuple(sorted(ids(masks.excluded))),
            swapped=tuple(sorted(ids(masks.swapped))),
            flags=flags,
            notes=notes,
        )

    def plan_export(self, selection: Selection, drop_flagged: Sequence[str]) -> ExportPlan:
        """What an export of `selection` writes and drops (the app asks on every edit: a
        byte per pair is kept until the annotations change, see `_flag_codes`)."""
        drop = tuple(flag for flag in FLAGS if flag in drop_flagged)
        counts = self._code_counts(selection.indices, drop)
        dropped = int(counts[_ALL_CODES & _DROPPED_BIT != 0].sum())
        return ExportPlan(
            params=selection.params,
            selected=selection.selected,
            dropped=dropped,
            spared=int(counts[_ALL_CODES & _SPARED_BIT != 0].sum()),
            written=selection.selected - dropped,
            drop_flagged=drop,
            flagged_written=self._flag_counts_of(counts, dropped=False),
            flagged_dropped=self._flag_counts_of(counts, dropped=True),
            bounds={name: (b.m1, b.m2, b.m2_auto) for name, b in selection.bounds.items()},
            trim_range=selection.trim_range,
        )

    def _flag_codes(self, drop: tuple[str, ...]) -> np.ndarray:
        """One byte per pair: bit i for the i-th flag (as `annotations.flags` orders them),
        _DROPPED_BIT and _SPARED_BIT for an export dropping `drop`. Counting the bytes of the
        selected pairs answers an export plan with one gather, not a pass over every pair
        per flag; kept until the annotations change."""
        version = self.annotations.version
        kept = self._codes.get(drop)
        if kept is not None and kept[0] == version:
            return kept[1]
        codes = np.zeros(self.total, np.uint8)
        for bit, mask in enumerate(self.annotations.flags.values()):
            codes |= mask.view(np.uint8) << np.uint8(bit)
        codes[self.annotations.dropped(drop)] |= _DROPPED_BIT
        codes[self.annotations.spared(drop)] |= _SPARED_BIT
        self._codes[drop] = (version, codes)
        return codes

    def _code_counts(self, indices: np.ndarray, drop: tuple[str, ...]) -> np.ndarray:
        return np.bincount(self._flag_codes(drop)[indices], minlength=_ALL_CODES.size)

    def _flag_counts_of(self, counts: np.ndarray, dropped: bool | None = None) -> dict[str, int]:
        """Per flag, the pairs counted in `counts` (`_code_counts`) that carry it: all of them,
        or only those an export drops (True) or writes (False)."""
        chosen = np.ones(_ALL_CODES.size, bool) if dropped is None else (_ALL_CODES & _DROPPED_BIT != 0) == dropped
        return {
            flag: int(counts[chosen & (_ALL_CODES & (1 << bit) != 0)].sum())
            for bit, flag in enumerate(self.annotations.flags)
        }

    def export(
        self,
        selection: Selection,
        out: str | Path,
        *,
        drop_flagged: Sequence[str] = DEFAULT_DROP_FLAGGED,
        fmt: str = "auto",
        include_scores: bool = True,
        force: bool = False,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Write `selection` with its manifest (core.export.exporter); returns the manifest."""
        if self.dataset_ref is None:
            raise DmtuiError("the session does not know its dataset's checksum, which an export records")
        return export_selection(
            self.dataset,
            self.dataset_ref,
            self.load_config,
            self.resolved,
            selection,
            self.annotated(),
            out,
            fmt=fmt,
            include_scores=include_scores,
            drop_flagged=drop_flagged,
            force=force,
            workspace_root=self.workspace.root if self.workspace else None,
            progress=progress,
            cancel=cancel,
        )
