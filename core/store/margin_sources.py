"""Where a named margin comes from: dataset columns or a workspace score table.

On the command line a margin source is ``NAME=COLUMN`` (a column that already holds the
margin), ``NAME=CHOSEN_COL,REJECTED_COL`` (per-response scores such as UltraFeedback's
``score_chosen`` / ``score_rejected``: margin = chosen - rejected), or a bare ``NAME``
(the newest score table of that name in the workspace, as written by `dmtui score`).
The names ``external``, ``implicit`` and ``ifd`` are the paper's; any other name is one
more source for aggregation.

Margins come back as float64 arrays aligned with the dataset's pairs; NaN marks a pair
without a score (null cell, or not scored yet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from core.data.loading import LoadedDataset
from core.errors import DmtuiError
from core.store.scores import SOURCE_NAME, ScoreStore, latest_score_table
from core.store.workspace import Workspace


@dataclass(frozen=True)
class MarginSpec:
    """One named margin source."""

    name: str
    columns: tuple[str, ...] = ()
    """() for a workspace score table; (margin_col,) or (chosen_col, rejected_col)."""
    fingerprint: str | None = None
    """For a workspace score table: which one (default: the newest of that name)."""

    @classmethod
    def parse(cls, text: str) -> MarginSpec:
        """``NAME``, ``NAME=COL`` or ``NAME=CHOSEN_COL,REJECTED_COL``.

        >>> MarginSpec.parse("external=score_chosen,score_rejected")
        MarginSpec(name='external', columns=('score_chosen', 'score_rejected'), fingerprint=None)
        """
        name, _, rest = text.partition("=")
        name = name.strip()
        if not SOURCE_NAME.match(name):
            raise DmtuiError(
                f"--margin {text!r}: {name!r} is not a valid source name",
                "use letters, digits, '_', '-' or '.', e.g. --margin external=score_margin",
            )
        columns = tuple(c.strip() for c in rest.split(",")) if rest else ()
        if len(columns) > 2 or any(not c for c in columns):
            raise DmtuiError(f"--margin {text!r}: expected NAME=COLUMN or NAME=CHOSEN_COL,REJECTED_COL")
        return cls(name, columns)

    def describe(self) -> str:
        if not self.columns:
            return f"{self.name} (workspace scores)"
        if len(self.columns) == 1:
            return f"{self.name} = column {self.columns[0]}"
        return f"{self.name} = {self.columns[0]} - {self.columns[1]}"


@dataclass
class ResolvedMargins:
    """Margins by source name plus what produced each (for manifests)."""

    margins: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)


def record_columns(dataset: LoadedDataset, names: list[str]) -> dict[str, np.ndarray]:
    """Numeric columns of the source rows as float64 (null -> NaN), aligned with pairs.

    JSON records are kept as text; their numeric fields were gathered while loading
    (`LoadedDataset.numbers`), so nothing is parsed again here.
    """
    records = dataset.records if dataset.numbers is None else dataset.numbers
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name not in records.column_names:
            if dataset.numbers is not None and name in dataset.report.extra_columns:
                raise DmtuiError(
                    f"{dataset.report.source}: column {name!r} holds no numbers, or not only numbers",
                    "a margin column must hold numbers (or null for a missing score)",
                )
            raise DmtuiError(
                f"{dataset.report.source}: no column {name!r} for a margin",
                f"columns kept from the data: {', '.join(dataset.report.extra_columns) or 'none'}",
            )
        column = records[name]
        try:
            values = column.cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise DmtuiError(
                f"{dataset.report.source}: column {name!r} is not numeric ({column.type}): {error}",
                "a margin column must hold numbers",
            ) from error
        out[name] = float64_numpy(values)
    return out


def float64_numpy(values: pa.ChunkedArray) -> np.ndarray:
    """A float64 column as a new numpy array, null -> NaN, read from its Arrow buffers.

    pyarrow's `to_numpy` imports pandas on first use when it is installed (about 0.4 s of
    CPU, inside the app's start, for nothing pandas does here)."""
    out = np.empty(len(values), dtype=np.float64)
    start = 0
    for chunk in values.chunks:
        end = start + len(chunk)
        validity, data = chunk.buffers()
        if data is None or chunk.null_count == len(chunk):
            out[start:end] = np.nan
        else:
            out[start:end] = np.frombuffer(data, dtype=np.float64, count=len(chunk), offset=chunk.offset * 8)
            if chunk.null_count:
                bits = np.unpackbits(
                    np.frombuffer(validity, dtype=np.uint8), count=chunk.offset + len(chunk), bitorder="little"
                )
                out[start:end][bits[chunk.offset :] == 0] = np.nan
        start = end
    return out


def resolve_margins(
    dataset: LoadedDataset, specs: list[MarginSpec], workspace: Workspace | None = None
) -> ResolvedMargins:
    """Margins for every spec, aligned with `dataset.pairs`."""
    resolved = ResolvedMargins()
    column_names = sorted({c for spec in specs for c in spec.columns})
    columns = record_columns(dataset, column_names) if column_names else {}
    for spec in specs:
        if spec.name in resolved.margins:
            raise DmtuiError(f"margin source {spec.name!r} is given twice")
        if len(spec.columns) == 1:
            resolved.margins[spec.name] = columns[spec.columns[0]]
            resolved.provenance[spec.name] = {"kind": "column", "columns": list(spec.columns)}
        elif len(spec.columns) == 2:
            resolved.margins[spec.name] = columns[spec.columns[0]] - columns[spec.columns[1]]
            resolved.provenance[spec.name] = {"kind": "columns", "columns": list(spec.columns)}
        else:
            store = _score_store(spec, workspace)
            resolved.margins[spec.name] = store.margins_for(dataset.pairs["pair_id"].combine_chunks())
            resolved.provenance[spec.name] = {
                "kind": "scores",
                "fingerprint": store.fingerprint,
                "meta": {k: v for k, v in store.read_meta().items() if k != "updated_at"},
            }
    return resolved


def _score_store(spec: MarginSpec, workspace: Workspace | None) -> ScoreStore:
    if workspace is None:
        raise DmtuiError(
            f"margin source {spec.name!r} names no columns and there is no workspace to read scores from",
            f"give --margin {spec.name}=COLUMN, or run `dmtui score` in a workspace first",
        )
    if spec.fingerprint:
        store = ScoreStore(workspace.scores_dir, spec.name, spec.fingerprint)
        if not store.parts():
            raise DmtuiError(f"no {spec.name} scores with fingerprint {spec.fingerprint} in {workspace.root}")
        return store
    latest = latest_score_table(workspace.scores_dir, spec.name)
    if latest is None:
        raise DmtuiError(
            f"no {spec.name!r} scores in workspace {workspace.root}",
            f"run `dmtui score` first, or give --margin {spec.name}=COLUMN",
        )
    return latest
