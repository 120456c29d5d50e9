"""Export a selection: the subset in the input's own format, plus a manifest to rebuild it.

An export is a folder::

    OUT/
      data.jsonl | data.parquet | data.csv | data/    the subset (save_to_disk for datasets input)
      annotations.jsonl                               the flags and notes of the exported pairs
      manifest.json                                   everything needed to rebuild it

The subset keeps every original column and row as the source had them (rows in source
order), plus ``pair_id`` and, unless ``include_scores=False``, one ``margin_<source>``
column per margin source (as selection saw it: negated for swapped pairs) and
``selection_score``. CSV cannot hold lists or records (conversations): such cells are
written as JSON text, and the manifest names those columns (``output.json_columns``).

Swapped pairs are written the way round the curator set them, consistently (`SwapRule`):
chosen and rejected exchanged, and with them every pair of columns that describes the
two replies (the two columns of a margin source ``NAME=CHOSEN_COL,REJECTED_COL``, and
columns whose names differ only by chosen/rejected: ``score_chosen``/``score_rejected``,
``chosen_rating``/``rejected_rating``, ``chosen_model``/``rejected_model``, ...); a margin
column ``NAME=COLUMN`` is negated; ``messages`` (UltraFeedback's copy of the chosen
conversation) takes the new chosen when it held the old one (alone, or after the
prompt's turns), and is left as it was otherwise. The manifest records these columns
(``export.swap``).

Flagged pairs. ``drop_flagged`` names flags (toxic, mislabeled, other) whose pairs are
left out of the written data after the selection is made: the export then holds fewer
pairs than the selection, and the manifest lists the dropped pairs with their flags. A
swap answers ``mislabeled`` (core.store.annotations.SWAP_ANSWERS): a mislabeled pair the
curator swapped is kept, and listed as spared (``export.spared_pair_ids``).
``annotations.jsonl`` holds one line per exported pair that carries a flag or a note
(``{"pair_id", "flags", "note"}``, in the data's row order).

The manifest records the input checksum and load options, where each margin came from
(columns, or a score table's fingerprint and models) with a checksum of the margin
values, every selection parameter with the M1/M2 actually used per source, the seed,
the curator's exclusions and swaps, the flags and notes of the selected pairs and which
were dropped, library versions, counts, the exported pair_ids and the output's checksum.
`rebuild_from_manifest` redoes the export from it byte for byte (from the flags and
notes it records, not the workspace's current ones), and refuses, saying why, when the
input or the margins differ from what it records.

Manifest versions: 2 added the flags, notes, dropped pairs, annotations.jsonl and
json_columns; 3 the swap rule (paired columns exchanged, a swapped mislabeled pair kept).
Older manifests (none of these) still rebuild byte for byte, by the rule they were
written with: only chosen and rejected exchanged, every dropped flag counts.

Writes are atomic: the folder is built under a temporary name and renamed into place;
an existing export is replaced only with ``force=True``; the input is only read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.data.loading import LoadConfig, LoadedDataset
from core.errors import DmtuiError
from core.io.atomic import (
    FOLDER_MODE,
    abandoned_temps,
    atomic_write_json,
    disk_failure,
    fsync_folder,
    owner_tag,
    writing,
)
from core.io.tables import take_rows
from core.io.versions import library_versions
from core.progress import ProgressFn, Reporter
from core.selection.selector import Selection, SelectionParams, select, tie_keys_from_pair_ids
from core.store.annotations import FLAGS, SWAP_ANSWERS, dropped_by_flags
from core.store.margin_sources import MarginSpec, ResolvedMargins, resolve_margins
from core.store.workspace import DatasetRef, Workspace, dataset_ref

MANIFEST_VERSION = 3
READABLE_MANIFEST_VERSIONS = (1, 2, 3)
ANNOTATIONS_NAME = "annotations.jsonl"
EXPORT_BATCH_ROWS = 65_536
"""Selected rows read from the cache at a time."""
MANIFEST_NAME = "manifest.json"
OUTPUT_FORMATS = ("jsonl", "parquet", "save_to_disk", "csv")
_FORMAT_FOR_KIND = {
    "jsonl": "jsonl",
    "json": "jsonl",
    "parquet": "parquet",
    "csv": "csv",
    "tsv": "csv",
    "save_to_disk": "save_to_disk",
    "hub": "save_to_disk",
}
_LIBRARIES = ("dmtui", "numpy", "pyarrow", "datasets")


class ExportError(DmtuiError):
    """An export that cannot be written or rebuilt."""


@dataclass(frozen=True)
class Annotated:
    """The curator's annotations an export honours and records, by pair_id.

    Exclusions and swaps decide the selection; flags decide which selected pairs
    `drop_flagged` leaves out; flags and notes are written beside the data."""

    excluded: tuple[str, ...] = ()
    swapped: tuple[str, ...] = ()
    flags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """pair_id -> its flags (pairs without flags are absent)."""
    notes: Mapping[str, str] = field(default_factory=dict)
    """pair_id -> its note (pairs without a note are absent)."""

    def masks(self, pair_ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        return _member(pair_ids, self.excluded), _member(pair_ids, self.swapped)

    def dropped(
        self, pair_ids: pa.Array | pa.ChunkedArray, drop: Sequence[str], answered: Sequence[str] = SWAP_ANSWERS
    ) -> np.ndarray:
        """True for the pairs an export that drops the flags `drop` leaves out; a flag in
        `answered` does not count on a swapped pair (core.store.annotations.dropped_by_flags)."""
        flags = {flag: _member(pair_ids, tuple(pid for pid, has in self.flags.items() if flag in has)) for flag in drop}
        return dropped_by_flags(flags, _member(pair_ids, self.swapped), drop, answered)


@dataclass(frozen=True)
class SwapRule:
    """What a swap changes in an exported record besides chosen and rejected, and which
    flags it answers (see the module's docstring)."""

    paired: tuple[tuple[str, str], ...] = ()
    """(chosen-side, rejected-side) columns exchanged with chosen and rejected."""
    negated: tuple[str, ...] = ()
    """Columns holding a margin (chosen minus rejected): negated when numeric."""
    follows_chosen: tuple[str, ...] = ()
    """Columns that copy the chosen conversation (`messages`): they take the new chosen when
    they held the old one (`_follow_chosen`)."""
    answers: tuple[str, ...] = SWAP_ANSWERS
    """Flags a swap answers: an export that drops them keeps a swapped pair carrying them."""

    def to_json(self) -> dict[str, Any]:
        return {
            "paired_columns": [list(pair) for pair in self.paired],
            "negated_columns": list(self.negated),
            "follows_chosen": list(self.follows_chosen),
            "answers_flags": list(self.answers),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SwapRule:
        return cls(
            tuple((a, b) for a, b in data["paired_columns"]),
            tuple(data["negated_columns"]),
            tuple(data["follows_chosen"]),
            tuple(data["answers_flags"]),
        )

    def apply(self, record: dict[str, Any], chosen_col: str, rejected_col: str, prompt_col: str | None) -> None:
        """Swap one JSON record in place."""
        old_chosen = record.get(chosen_col)
        for a, b in ((chosen_col, rejected_col), *self.paired):
            if a in record and b in record:
                record[a], record[b] = record[b], record[a]
            elif a in record or b in record:  # a record holding one side only: it moves to the other
                present, absent = (a, b) if a in record else (b, a)
                record[absent] = record.pop(present)
        for name in self.negated:
            value = record.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                record[name] = 0 - value  # not -value: no -0.0
        for name in self.follows_chosen:
            if name in record:
                record[name] = _follow_chosen(
                    record[name], old_chosen, record[chosen_col], record.get(prompt_col) if prompt_col else None
                )


def _follow_chosen(value: Any, old_chosen: Any, new_chosen: Any, prompt: Any) -> Any:
    """A copy of the chosen conversation after a swap: the new chosen if `value` was the old
    one, or the prompt's turns then the new chosen if it was those turns then the old one;
    anything else is returned as it was."""
    if value == old_chosen:
        return new_chosen
    if all(isinstance(part, list) for part in (value, prompt, old_chosen, new_chosen)) and value == prompt + old_chosen:
        return prompt + new_chosen
    return value


LEGACY_SWAP = SwapRule(answers=())
"""How exports before manifest version 3 swapped: chosen and rejected only, and a dropped
flag counted on swapped pairs too."""

FOLLOWS_CHOSEN = ("messages",)
"""Columns known to copy the chosen conversation (UltraFeedback-binarized's SFT column)."""


def swap_rule_for(dataset: LoadedDataset, provenance: Mapping[str, Mapping[str, Any]]) -> SwapRule:
    """The columns a swap changes in this data: the two columns of each margin source
    `NAME=CHOSEN_COL,REJECTED_COL`, every pair of columns whose names differ only by
    chosen/rejected, the column of each `NAME=COLUMN` margin source, and `messages`."""
    columns = _original_columns(dataset)
    main = (dataset.report.columns["chosen"], dataset.report.columns["rejected"])
    candidates = [tuple(p["columns"]) for p in provenance.values() if len(p.get("columns", ())) == 2]
    candidates += [(name, name.replace("chosen", "rejected")) for name in columns if "chosen" in name]
    paired: list[tuple[str, str]] = []
    for a, b in candidates:
        if (
            a != b
            and a in columns
            and b in columns
            and not {a, b} & set(main)
            and all({a, b}.isdisjoint(pair) for pair in paired)
        ):
            paired.append((a, b))
    negated = tuple(
        dict.fromkeys(
            p["columns"][0]
            for p in provenance.values()
            if len(p.get("columns", ())) == 1 and p["columns"][0] in columns
        )
    )
    follows = tuple(name for name in FOLLOWS_CHOSEN if name in columns and name not in main)
    return SwapRule(tuple(paired), negated, follows)


def _original_columns(dataset: LoadedDataset) -> list[str]:
    """Every column of the source rows, mapped ones first."""
    return list(dict.fromkeys([*dataset.report.columns.values(), *dataset.report.extra_columns]))


def _member(pair_ids: pa.Array | pa.ChunkedArray, chosen: Sequence[str]) -> np.ndarray:
    found = pc.is_in(pair_ids, value_set=pa.array(chosen, pa.string()))
    return found.to_numpy(zero_copy_only=False).astype(bool)


def output_format_for(source_kind: str) -> str:
    return _FORMAT_FOR_KIND[source_kind]


def margins_checksum(margins: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of the margin arrays (name, then float64 bytes), NaN patterns included."""
    digest = hashlib.sha256()
    for name in sorted(margins):
        digest.update(name.encode() + b"\0")
        digest.update(np.ascontiguousarray(margins[name], dtype="<f8").tobytes())
    return digest.hexdigest()


def params_to_json(params: SelectionParams) -> dict[str, Any]:
    data = asdict(params)
    data["sources"] = list(params.sources)
    for key in ("m1", "m2", "weights"):
        if isinstance(data[key], Mapping):
            data[key] = dict(data[key])
    data["budget_kind"] = "fraction" if isinstance(params.budget, float) else "count"
    return data


def params_from_json(data: dict[str, Any]) -> SelectionParams:
    data = dict(data)
    kind = data.pop("budget_kind", "count")
    data["budget"] = float(data["budget"]) if kind == "fraction" else int(data["budget"])
    data["sources"] = tuple(data["sources"])
    return SelectionParams(**data)


def _json_number(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _column_names(dataset: LoadedDataset, margins: Mapping[str, np.ndarray], include_scores: bool) -> list[str]:
    added = ["pair_id"]
    if include_scores:
        added += [f"margin_{name}" for name in margins] + ["selection_score"]
    clash = sorted(set(added) & set(_original_columns(dataset)))
    if clash:
        raise ExportError(
            f"the data already has column(s) {', '.join(clash)}, which the export would add",
            "rename them in the data, or pass --no-scores (pair_id is always added)",
        )
    return added


@dataclass(frozen=True)
class _Swaps:
    """Which pairs are swapped, and what a swap changes."""

    mask: np.ndarray
    rule: SwapRule


def _json_records(
    dataset: LoadedDataset, indices: np.ndarray, swaps: _Swaps, added: dict[str, list]
) -> Iterator[dict[str, Any]]:
    """The selected JSON records in order, swaps applied and the added columns set, read
    from the mapped cache a batch at a time (only one batch of text exists as Python objects)."""
    columns = dataset.report.columns
    chosen_col, rejected_col, prompt_col = columns["chosen"], columns["rejected"], columns.get("prompt")
    for start in range(0, len(indices), EXPORT_BATCH_ROWS):
        batch = indices[start : start + EXPORT_BATCH_ROWS]
        texts = take_rows(dataset.records["_json"], batch).to_pylist()
        for position, (index, text) in enumerate(zip(batch.tolist(), texts), start=start):
            record = json.loads(text)
            if swaps.mask[index]:
                swaps.rule.apply(record, chosen_col, rejected_col, prompt_col)
            for name, values in added.items():
                record[name] = values[position]
            yield record


def _write_jsonl(
    path: Path, dataset: LoadedDataset, indices: np.ndarray, swaps: _Swaps, added: dict[str, list], reporter: Reporter
) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for position, record in enumerate(_json_records(dataset, indices, swaps, added)):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            if position % 4096 == 4095:
                reporter.advance(4096)


def _arrow_subset(dataset: LoadedDataset, indices: np.ndarray, swaps: _Swaps, added: dict[str, list]) -> pa.Table:
    table = take_rows(dataset.records, indices)
    if swaps.mask[indices].any():
        columns = dataset.report.columns
        table = _swap_arrow(
            table, swaps.mask[indices], swaps.rule, columns["chosen"], columns["rejected"], columns.get("prompt")
        )
    for name, values in added.items():
        table = table.append_column(name, pa.array(values, pa.string() if name == "pair_id" else pa.float64()))
    return table


def _swap_arrow(
    table: pa.Table, flip: np.ndarray, rule: SwapRule, chosen_col: str, rejected_col: str, prompt_col: str | None
) -> pa.Table:
    """`SwapRule.apply` on the rows of an Arrow table where `flip` is set."""
    names = table.column_names
    old_chosen = table[chosen_col]
    columns = {name: table[name] for name in names}
    mask = pa.array(flip)
    for a, b in ((chosen_col, rejected_col), *rule.paired):
        if a not in names or b not in names:
            continue
        first, second = table[a], table[b]
        if first.type != second.type and all(
            pa.types.is_integer(c.type) or pa.types.is_floating(c.type) for c in (first, second)
        ):
            first, second = first.cast(pa.float64()), second.cast(pa.float64())
        if first.type == second.type:  # other mixed types stay as they are: no column can hold both
            columns[a], columns[b] = pc.if_else(mask, second, first), pc.if_else(mask, first, second)
    for name in rule.negated:
        if name in names and (pa.types.is_integer(table[name].type) or pa.types.is_floating(table[name].type)):
            negated = pc.subtract(pa.scalar(0, table[name].type), table[name])  # not pc.negate: no -0.0
            columns[name] = pc.if_else(mask, negated, table[name])
    rows = np.flatnonzero(flip)
    for name in rule.follows_chosen:
        if name not in names:
            continue
        parts = [
            take_rows(column, rows).to_pylist() if column is not None else [None] * len(rows)
            for column in (
                table[name],
                old_chosen,
                columns[chosen_col],
                table[prompt_col] if prompt_col in names else None,
            )
        ]
        changed, values = np.zeros(len(flip), bool), [None] * len(flip)
        for row, value, old, new, prompt in zip(rows.tolist(), *parts):
            followed = _follow_chosen(value, old, new, prompt)
            if followed is not value:
                changed[row], values[row] = True, followed
        if changed.any():
            columns[name] = pc.if_else(pa.array(changed), pa.array(values, table[name].type), table[name])
    for name, column in columns.items():
        if column is not table[name]:
            table = table.set_column(names.index(name), name, column)
    return table


def _write_output(
    folder: Path,
    fmt: str,
    dataset: LoadedDataset,
    indices: np.ndarray,
    swaps: _Swaps,
    added: dict[str, list],
    fingerprint: str,
    reporter: Reporter,
) -> tuple[str, list[str]]:
    """Write the subset into `folder`; returns the data's name inside it and the columns
    written as JSON text (CSV cells that hold lists or records)."""
    from_json = "_json" in dataset.records.column_names
    if fmt == "jsonl":
        if from_json:
            _write_jsonl(folder / "data.jsonl", dataset, indices, swaps, added, reporter)
        else:
            _write_arrow_as_jsonl(folder / "data.jsonl", _arrow_subset(dataset, indices, swaps, added))
        return "data.jsonl", []
    table = (
        _json_subset_as_arrow(dataset, indices, swaps, added)
        if from_json
        else _arrow_subset(dataset, indices, swaps, added)
    )
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, folder / "data.parquet")
        return "data.parquet", []
    if fmt == "csv":
        import pyarrow.csv as pa_csv

        table, encoded = _nested_as_json_text(table)
        pa_csv.write_csv(table, folder / "data.csv")
        return "data.csv", encoded
    import datasets

    datasets.Dataset(table, fingerprint=fingerprint).save_to_disk(str(folder / "data"))
    return "data", []


def _json_subset_as_arrow(
    dataset: LoadedDataset, indices: np.ndarray, swaps: _Swaps, added: dict[str, list]
) -> pa.Table:
    records = list(_json_records(dataset, indices, swaps, added))
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ExportError(
            f"the selected rows of {dataset.report.source} cannot form a table: {error}",
            "a column holds values of different types in different rows; export with --format jsonl",
        ) from None


def _nested_as_json_text(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """Columns of lists, records or maps as JSON text (what a CSV cell can hold)."""
    encoded = []
    for position, column in enumerate(table.schema):
        if pa.types.is_nested(column.type):
            text = [
                None if value is None else json.dumps(value, ensure_ascii=False, default=_json_default)
                for value in table.column(position).to_pylist()
            ]
            table = table.set_column(position, column.name, pa.array(text, pa.string()))
            encoded.append(column.name)
    return table, encoded


def _write_arrow_as_jsonl(path: Path, table: pa.Table) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for batch in table.to_batches(max_chunksize=EXPORT_BATCH_ROWS):
            for record in batch.to_pylist():
                out.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    """Values Arrow holds that JSON has no type for: dates as ISO text, bytes as base64."""
    import base64
    import datetime
    import decimal

    if isinstance(value, (datetime.date, datetime.time, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"a value of type {type(value).__name__} has no JSON form")


def _tree_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _replace_folder(temp: Path, out: Path, force: bool) -> None:
    if out.exists():
        if not force:
            raise ExportError(f"{out} already exists", "choose another --out, or pass --force to replace it")
        old = out.with_name(f".{out.name}.old-{owner_tag()}")
        os.replace(out, old)
        os.replace(temp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temp, out)
    fsync_folder(out.parent)


def _recover_interrupted(out: Path) -> None:
    """Clear up after an export to `out` that was killed: its temp folder goes, and an export
    it had moved aside to replace (killed between the two renames) is put back."""
    for temp in abandoned_temps(out.parent, f".{out.name}.tmp-"):
        shutil.rmtree(temp, ignore_errors=True)
    for old in abandoned_temps(out.parent, f".{out.name}.old-"):
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, out)


def _sync_tree(folder: Path) -> None:
    """Flush every file under `folder` to disk before the rename that publishes it."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            fsync_folder(path)
        else:
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def export_selection(
    dataset: LoadedDataset,
    input_ref: DatasetRef,
    load_config: LoadConfig,
    resolved: ResolvedMargins,
    selection: Selection,
    annotated: Annotated,
    out: str | Path,
    *,
    fmt: str = "auto",
    include_scores: bool = True,
    drop_flagged: Sequence[str] = (),
    force: bool = False,
    workspace_root: Path | None = None,
    swap_rule: SwapRule | None = None,
    expect_sha256: str | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Write `selection` of `dataset` to the folder `out`; returns the manifest written.

    Selected pairs that carry any flag in `drop_flagged` are left out of the data (and
    listed in the manifest), unless their swap answered it. Swapped pairs are written
    by `swap_rule` (default: `swap_rule_for` this data; a rebuild passes the recorded
    one). With `expect_sha256` (a rebuild), data whose checksum differs is never put in
    place.
    """
    out = Path(out)
    with writing(out):
        _recover_interrupted(out)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists", "choose another --out, or pass --force to replace it")
    fmt = output_format_for(dataset.report.source_kind) if fmt == "auto" else fmt
    if fmt not in OUTPUT_FORMATS:
        raise ExportError(f"unknown output format {fmt!r}", f"one of: auto, {', '.join(OUTPUT_FORMATS)}")
    unknown = [flag for flag in drop_flagged if flag not in FLAGS]
    if unknown:
        raise ExportError(f"unknown flag(s) to drop: {', '.join(unknown)}", f"flags: {', '.join(FLAGS)}")
    drop_flagged = [flag for flag in FLAGS if flag in drop_flagged]
    rule = swap_rule if swap_rule is not None else swap_rule_for(dataset, resolved.provenance)
    pair_ids = dataset.pairs["pair_id"]
    _, swapped = annotated.masks(pair_ids)
    dropping = annotated.dropped(pair_ids, drop_flagged, rule.answers)[selection.indices]
    sparing = annotated.dropped(pair_ids, drop_flagged, ())[selection.indices] & ~dropping
    indices = selection.indices[~dropping]
    dropped_ids = take_rows(pair_ids, selection.indices[dropping]).to_pylist()
    spared_ids = take_rows(pair_ids, selection.indices[sparing]).to_pylist()
    added_names = _column_names(dataset, resolved.margins, include_scores)
    added: dict[str, list] = {"pair_id": take_rows(pair_ids, indices).to_pylist()}
    if include_scores:
        for name, margin in resolved.margins.items():
            effective = np.where(swapped, -margin, margin)
            added[f"margin_{name}"] = [_json_number(v) for v in effective[indices].tolist()]
        score = selection.score if selection.score is not None else np.full(selection.total, np.nan)
        added["selection_score"] = [_json_number(v) for v in score[indices].tolist()]
    assert list(added) == added_names
    selected_ids = added["pair_id"]
    fingerprint = hashlib.sha256("\n".join(selected_ids).encode()).hexdigest()[:16]
    recorded = set(selected_ids) | set(dropped_ids)
    flags = {pid: list(annotated.flags[pid]) for pid in sorted(recorded & set(annotated.flags))}
    notes = {pid: annotated.notes[pid] for pid in sorted(recorded & set(annotated.notes))}

    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-{owner_tag()}-"))
    reporter = Reporter("export", len(indices), progress, cancel, unit="pairs")
    try:
        os.chmod(temp, FOLDER_MODE)  # mkdtemp made it private; an export is shared like any folder
        data_name, json_columns = _write_output(
            temp, fmt, dataset, indices, _Swaps(swapped, rule), added, fingerprint, reporter
        )
        _write_annotations(temp / ANNOTATIONS_NAME, selected_ids, flags, notes)
        reporter.done = len(indices)
        reporter.finish()
        flagged_written = {flag: sum(flag in flags.get(pid, ()) for pid in selected_ids) for flag in FLAGS}
        manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "input": {
                **asdict(input_ref),
                "load_config": asdict(load_config),
                "format": dataset.report.format,
                "prompt_style": dataset.report.prompt_style,
                "columns": dataset.report.columns,
            },
            "workspace": str(workspace_root) if workspace_root else None,
            "margins": {"sources": resolved.provenance, "sha256": margins_checksum(resolved.margins)},
            "selection": {
                "params": params_to_json(selection.params),
                "bounds": {name: asdict(b) for name, b in selection.bounds.items()},
                "trim_range": list(selection.trim_range) if selection.trim_range else None,
                "tie_break": "pair_id",
                "notes": list(selection.notes),
            },
            "annotations": {
                "excluded": list(annotated.excluded),
                "swapped": list(annotated.swapped),
                "flags": flags,
                "notes": notes,
            },
            "export": {
                "drop_flagged": drop_flagged,
                "dropped_pair_ids": dropped_ids,
                "spared_pair_ids": spared_ids,
                "swap": rule.to_json(),
            },
            "counts": {
                "total": selection.total,
                "excluded": selection.excluded,
                "unscored": selection.unscored,
                "eligible": selection.eligible,
                "candidates": selection.candidates,
                "requested": selection.requested,
                "selected": len(selected_ids),
                "dropped_flagged": len(dropped_ids),
                "spared_by_swap": len(spared_ids),
                "swapped_selected": int(swapped[indices].sum()),
                "flagged_selected": flagged_written,
            },
            "output": {
                "format": fmt,
                "data": data_name,
                "include_scores": include_scores,
                "sha256": _tree_checksum(temp / data_name),
                "json_columns": json_columns,
                "annotations": ANNOTATIONS_NAME,
                "annotations_sha256": _tree_checksum(temp / ANNOTATIONS_NAME),
            },
            "library_versions": library_versions(_LIBRARIES),
            "selected_pair_ids": selected_ids,
        }
        if expect_sha256 is not None and manifest["output"]["sha256"] != expect_sha256:
            raise ExportError(
                "the rebuilt data differs byte-wise from the original export; nothing was written",
                f"library versions then and now may differ; now: {library_versions(_LIBRARIES)}",
            )
        atomic_write_json(temp / MANIFEST_NAME, manifest)
        _sync_tree(temp)
        _replace_folder(temp, out, force)
    except BaseException as error:
        shutil.rmtree(temp, ignore_errors=True)
        translated = disk_failure(out, error)
        if translated is None:
            raise
        raise translated from error
    return manifest


def _write_annotations(
    path: Path, exported_ids: list[str], flags: Mapping[str, list[str]], notes: Mapping[str, str]
) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for pid in exported_ids:
            if pid in flags or pid in notes:
                record = {"pair_id": pid, "flags": flags.get(pid, []), "note": notes.get(pid, "")}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_annotations(workspace: Workspace | None) -> dict[str, Any]:
    """Every annotation in the workspace's store, by pair_id (none without a workspace)."""
    if workspace is None or not workspace.annotations_path.exists():
        return {}
    from core.store.annotations import AnnotationStore

    with AnnotationStore(workspace.annotations_path) as store:
        return store.all()


def annotated_from_workspace(workspace: Workspace | None) -> Annotated:
    """Every exclusion, swap, flag and note the workspace's store holds."""
    annotations = read_annotations(workspace).values()
    return Annotated(
        excluded=tuple(sorted(a.pair_id for a in annotations if a.excluded)),
        swapped=tuple(sorted(a.pair_id for a in annotations if a.swapped)),
        flags={a.pair_id: a.flags for a in annotations if a.flags},
        notes={a.pair_id: a.note for a in annotations if a.note},
    )


def run_selection(
    dataset: LoadedDataset, resolved: ResolvedMargins, params: SelectionParams, annotated: Annotated
) -> Selection:
    """`select` with the curator's annotations and pair_id tie-breaking, as exports do."""
    pair_ids = dataset.pairs["pair_id"]
    excluded, swapped = annotated.masks(pair_ids)
    return select(
        resolved.margins, params, excluded=excluded, swapped=swapped, tie_break=tie_keys_from_pair_ids(pair_ids)
    )


_REQUIRED_KEYS = (
    ("input", "checksum"),
    ("input", "source"),
    ("input", "load_config"),
    ("selection", "params"),
    ("margins", "sources"),
    ("margins", "sha256"),
    ("output", "sha256"),
    ("output", "format"),
    ("annotations", "excluded"),
)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A manifest, checked for the keys a rebuild needs."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as error:
        raise ExportError(f"{path}: no such manifest", "point --manifest at an export's manifest.json") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"{path}: not valid JSON ({error})", "the manifest is damaged") from error
    if not isinstance(manifest, dict):
        raise ExportError(f"{path}: not a dmtui export manifest")
    missing = [
        f"{section}.{key}"
        for section, key in _REQUIRED_KEYS
        if not isinstance(manifest.get(section), dict) or key not in manifest[section]
    ]
    if "selected_pair_ids" not in manifest:
        missing.append("selected_pair_ids")
    if missing:
        raise ExportError(
            f"{path}: not a complete dmtui export manifest (missing {', '.join(missing)})",
            "point --manifest at the manifest.json of an export",
        )
    if manifest.get("manifest_version") not in READABLE_MANIFEST_VERSIONS:
        raise ExportError(
            f"{path}: manifest version {manifest.get('manifest_version')!r} is not one this dmtui "
            f"reads ({', '.join(map(str, READABLE_MANIFEST_VERSIONS))})",
            "a newer dmtui wrote it: rebuild it with that release",
        )
    problem = _manifest_problem(manifest, path.parent)
    if problem:
        raise ExportError(f"{path}: {problem}", "the manifest was edited or damaged; use the one the export wrote")
    return manifest


def _manifest_problem(manifest: dict[str, Any], folder: Path) -> str | None:
    """What is wrong with the values a rebuild or a training run would act on, if anything.

    A manifest is a file anyone can edit: its data name must stay inside the export
    folder, its source and fingerprint names must be plain names (they become paths in
    the workspace), and each value must have the type the code that reads it expects.
    """
    from core.io.paths import inside, is_plain_name
    from core.store.scores import SOURCE_NAME

    def strings(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)

    recorded, output = manifest["input"], manifest["output"]
    data = output.get("data")
    if data is not None and not (is_plain_name(data) and inside(folder, folder / data)):
        return f"output.data {data!r} is not a name inside the export folder"
    if output["format"] not in OUTPUT_FORMATS:
        return f"output.format {output['format']!r} is not one of {', '.join(OUTPUT_FORMATS)}"
    if not isinstance(output.get("include_scores", True), bool):
        return "output.include_scores is not true or false"
    if not (isinstance(recorded["source"], str) and recorded["source"] and isinstance(recorded["checksum"], str)):
        return "input.source and input.checksum must be strings"
    config, defaults = recorded["load_config"], asdict(LoadConfig())
    if not isinstance(config, dict) or set(config) - set(defaults):
        return f"input.load_config is not a set of load options ({', '.join(defaults)})"
    for name, value in config.items():
        default = defaults[name]
        if default is None:  # a column name or split
            fits = value is None or isinstance(value, str)
        else:  # strict (bool) or max_field_chars (int); bool is an int to Python
            fits = type(value) is type(default)
        if not fits:
            return f"input.load_config.{name} = {value!r} does not fit that option"
    sources = manifest["margins"]["sources"]
    if not isinstance(sources, dict):
        return "margins.sources is not a mapping of source names"
    for name, provenance in sources.items():
        if not SOURCE_NAME.match(name) or not isinstance(provenance, dict):
            return f"margins.sources has an invalid source {name!r}"
        fingerprint = provenance.get("fingerprint")
        if fingerprint is not None and not (isinstance(fingerprint, str) and SOURCE_NAME.match(fingerprint)):
            return f"margins.sources.{name}.fingerprint {fingerprint!r} is not a score table name"
        if not strings(provenance.get("columns", [])) or len(provenance.get("columns", [])) > 2:
            return f"margins.sources.{name}.columns is not a list of up to two column names"
    annotations = manifest["annotations"]
    if not (
        strings(annotations["excluded"])
        and strings(annotations.get("swapped", []))
        and strings(manifest["selected_pair_ids"])
    ):
        return "annotations and selected_pair_ids must be lists of pair ids"
    flags, notes = annotations.get("flags", {}), annotations.get("notes", {})
    if not (isinstance(flags, dict) and all(strings(f) and set(f) <= set(FLAGS) for f in flags.values())):
        return f"annotations.flags must map pair ids to lists of flags ({', '.join(FLAGS)})"
    if not (isinstance(notes, dict) and all(isinstance(n, str) for n in notes.values())):
        return "annotations.notes must map pair ids to text"
    export = manifest.get("export", {})
    if not (
        isinstance(export, dict)
        and strings(export.get("drop_flagged", []))
        and set(export.get("drop_flagged", [])) <= set(FLAGS)
        and strings(export.get("dropped_pair_ids", []))
    ):
        return "export.drop_flagged and export.dropped_pair_ids must be lists of flags and of pair ids"
    if not isinstance(manifest.get("workspace") or "", str) or not isinstance(manifest["selection"]["params"], dict):
        return "workspace must be a path and selection.params a mapping"
    if "swap" not in export:
        return "export.swap is missing (a version-3 manifest records it)" if manifest["manifest_version"] >= 3 else None
    swap = export["swap"]
    if not (
        isinstance(swap, dict)
        and isinstance(swap.get("paired_columns"), list)
        and all(strings(pair) and len(pair) == 2 for pair in swap["paired_columns"])
        and strings(swap.get("negated_columns"))
        and strings(swap.get("follows_chosen"))
        and strings(swap.get("answers_flags"))
        and set(swap["answers_flags"]) <= set(FLAGS)
    ):
        return (
            "export.swap must list paired_columns (pairs of names), negated_columns, follows_chosen and answers_flags"
        )
    return None


def rebuild_from_manifest(
    manifest_path: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Redo an export from its manifest; refuses when the input or margins changed."""
    from core.data.loading import load_dataset

    manifest = read_manifest(manifest_path)
    recorded = manifest["input"]
    source = recorded["source"]
    current = dataset_ref(source)
    if current.checksum != recorded["checksum"]:
        raise ExportError(
            f"the input changed since the export: {source} has sha256 {current.checksum[:12]}, "
            f"the manifest records {recorded['checksum'][:12]}",
            "rebuild needs the exact input; restore it, or make a new export from the current data",
        )
    load_config = LoadConfig.from_recorded(recorded["load_config"])
    try:
        params = params_from_json(manifest["selection"]["params"])
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(
            f"{manifest_path}: selection.params cannot be read ({error!r})",
            "the manifest was edited or damaged; use the one the export wrote",
        ) from None
    workspace = _manifest_workspace(manifest.get("workspace"), current, load_config)
    dataset = load_dataset(source, load_config, progress=progress, cancel=cancel)
    specs = []
    for name, provenance in manifest["margins"]["sources"].items():
        columns = tuple(provenance.get("columns", ()))
        specs.append(MarginSpec(name, columns, provenance.get("fingerprint")))
    resolved = resolve_margins(dataset, specs, workspace)
    if margins_checksum(resolved.margins) != manifest["margins"]["sha256"]:
        raise ExportError(
            "the margins differ from the ones the export used (a score table was changed or extended)",
            "rebuild needs the same scores; make a new export from the current ones",
        )
    recorded_annotations, export = manifest["annotations"], manifest.get("export", {})
    annotated = Annotated(
        tuple(recorded_annotations["excluded"]),
        tuple(recorded_annotations.get("swapped", [])),
        {pid: tuple(flags) for pid, flags in recorded_annotations.get("flags", {}).items()},
        dict(recorded_annotations.get("notes", {})),
    )
    selection = run_selection(dataset, resolved, params, annotated)
    drop_flagged = export.get("drop_flagged", [])
    rule = SwapRule.from_json(export["swap"]) if "swap" in export else LEGACY_SWAP
    dropping = annotated.dropped(dataset.pairs["pair_id"], drop_flagged, rule.answers)[selection.indices]
    selected_ids = take_rows(dataset.pairs["pair_id"], selection.indices[~dropping]).to_pylist()
    if selected_ids != manifest["selected_pair_ids"]:
        raise ExportError(
            "the rebuilt selection differs from the manifest's pair_ids",
            "the selection code changed between versions; see library_versions in the manifest",
        )
    output = manifest["output"]
    rebuilt = export_selection(
        dataset,
        current,
        load_config,
        resolved,
        selection,
        annotated,
        out,
        fmt=output["format"],
        include_scores=output.get("include_scores", True),
        drop_flagged=drop_flagged,
        force=force,
        swap_rule=rule,
        workspace_root=Path(manifest["workspace"]) if manifest.get("workspace") else None,
        expect_sha256=output["sha256"],
        progress=progress,
        cancel=cancel,
    )
    return rebuilt


def _manifest_workspace(root: str | None, dataset: DatasetRef, load_config: LoadConfig) -> Workspace | None:
    """The workspace whose score tables the export read, for reading only.

    It is not opened (opening may rewrite its workspace.json): a rebuild writes nothing
    but its output folder, whatever folder the manifest names. The input's checksum is
    checked by the rebuild itself.
    """
    if not root:
        return None
    from core.store.workspace import is_workspace

    if not is_workspace(root):
        raise ExportError(
            f"the manifest's workspace {root} is not a dmtui workspace",
            "the export read scores from it; restore it where it was",
        )
    return Workspace(Path(root), dataset, load_config)
