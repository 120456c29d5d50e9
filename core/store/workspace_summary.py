"""What a workspace holds besides the dataset: scores, annotations, exports, runs.

`summarise` reads each part as it is on disk (nothing is written or repaired) and
returns plain JSON types, for `dmtui info WORKSPACE` and its ``--json``. A part that
cannot be read is listed with the reason instead of stopping the summary.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core.store.annotations import AnnotationStore
from core.store.scores import ScoreStore, list_score_tables
from core.store.workspace import Workspace

MANIFEST_NAME = "manifest.json"
RUN_NAME = "run.json"


def summarise(workspace: Workspace, pair_ids: pa.ChunkedArray | pa.Array) -> dict[str, Any]:
    """Scores, annotations, exports and runs of `workspace`, against its loaded `pair_ids`."""
    return {
        "workspace": str(workspace.root),
        "scores": _scores(workspace, pair_ids),
        "annotations": _annotations(workspace, pair_ids),
        "exports": _folders(workspace.exports_dir, _export),
        "runs": _folders(workspace.runs_dir, _run),
    }


def _scores(workspace: Workspace, pair_ids) -> list[dict[str, Any]]:
    tables = []
    for info in list_score_tables(workspace.scores_dir):
        table = ScoreStore(workspace.scores_dir, info.source, info.fingerprint).read()
        scored = pc.sum(pc.is_in(pair_ids, value_set=table["pair_id"].combine_chunks())).as_py() if table else 0
        models = info.meta.get("models", {})
        tables.append(
            {
                "source": info.source,
                "fingerprint": info.fingerprint,
                "scored": int(scored or 0),
                "pairs": len(pair_ids),
                "models": {role: str(path) for role, path in models.items() if path},
                "updated": _when(info.updated_at),
            }
        )
    return tables


def _annotations(workspace: Workspace, pair_ids) -> dict[str, Any]:
    if not workspace.annotations_path.is_file():
        return {"annotated": 0}
    with AnnotationStore(workspace.annotations_path) as store:
        annotations = [a for a in store.all().values() if not a.is_blank]
    present = set(pa.chunked_array([pair_ids]).to_pylist()) if annotations else set()
    flags = Counter(flag for a in annotations for flag in a.flags)
    return {
        "annotated": len(annotations),
        "flags": dict(sorted(flags.items())),
        "excluded": sum(a.excluded for a in annotations),
        "swapped": sum(a.swapped for a in annotations),
        "notes": sum(bool(a.note) for a in annotations),
        "not_in_data": sum(a.pair_id not in present for a in annotations),
    }


def _folders(root: Path, describe) -> list[dict[str, Any]]:
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            found.append({"name": folder.name, **describe(folder)})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            found.append({"name": folder.name, "unreadable": f"{type(error).__name__}: {error}"})
    return found


def _export(folder: Path) -> dict[str, Any]:
    manifest = json.loads((folder / MANIFEST_NAME).read_text("utf-8"))
    params, counts = manifest["selection"]["params"], manifest["counts"]
    return {
        "created": manifest.get("created_at"),
        "mode": params.get("mode"),
        "budget": params.get("budget"),
        "selected": counts.get("selected"),
        "of": counts.get("total"),
        "format": manifest["output"]["format"],
    }


def _run(folder: Path) -> dict[str, Any]:
    record = json.loads((folder / RUN_NAME).read_text("utf-8"))
    outcome = record.get("outcome") or {"status": "running or stopped"}
    loss = (outcome.get("summary") or {}).get("train_loss")
    return {
        "status": outcome.get("status"),
        "step": outcome.get("step"),
        **({"train_loss": loss} if loss is not None else {}),
    }


def _when(stamp: float) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else None
