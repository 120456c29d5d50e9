"""The training runs of a workspace, read back for comparison (the app's runs view and
`dmtui runs`): which subset each trained on, how far it got, and its metric curves.

Each run folder is one `dmtui train` run (core.training.trainer): ``run.json`` names the export
it read, ``metrics.jsonl`` holds one record per logging step. A folder that cannot be
read is listed with its problem rather than dropped, so a comparison never hides a run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.training.trainer import METRICS_JSONL, RUN_JSON

CURVES: tuple[tuple[str, str], ...] = (
    ("loss", "loss"),
    ("reward_margin", "reward margin"),
    ("reward_accuracy", "reward accuracy"),
    ("learning_rate", "learning rate"),
)
"""The metrics drawn and compared, as (metrics key, title)."""


@dataclass(frozen=True)
class RunSummary:
    name: str
    path: Path
    subset: str
    """What the run trained on: the export's selection, e.g. "dm-mul 10% (400 pairs)"."""
    status: str
    """done, cancelled, unfinished (no outcome recorded: running, or killed), or unreadable: why."""
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps(self) -> int | None:
        return self.metrics[-1].get("step") if self.metrics else None

    @property
    def total_steps(self) -> int | None:
        return self.metrics[-1].get("total_steps") if self.metrics else None

    def curve(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of one metric, leaving out steps where it was not reported."""
        points = [
            (float(r["step"]), float(r[key]))
            for r in self.metrics
            if isinstance(r.get(key), (int, float))
            and isinstance(r.get("step"), (int, float))
            and math.isfinite(r[key])
        ]
        return [s for s, _ in points], [v for _, v in points]

    def last(self, key: str) -> float | None:
        values = self.curve(key)[1]
        return values[-1] if values else None


def subset_label(manifest: dict[str, Any]) -> str:
    """ "dm-mul 10% (400 pairs)" from an export's manifest; "?" for what it does not say."""
    params = manifest.get("selection", {}).get("params", {}) if isinstance(manifest.get("selection"), dict) else {}
    mode = str(params.get("mode", "?"))
    if mode in ("top", "mid", "bot") and params.get("source"):
        mode = f"{mode}:{params['source']}"
    budget = params.get("budget")
    if isinstance(budget, float) and params.get("budget_kind") == "fraction":
        shown = f" {budget:.0%}" if budget * 100 == round(budget * 100) else f" {budget:.2%}"
    elif budget is not None:
        shown = f" {budget}"
    else:
        shown = ""
    selected = manifest.get("counts", {}).get("selected") if isinstance(manifest.get("counts"), dict) else None
    return f"{mode}{shown}" + (f" ({selected:,} pairs)" if isinstance(selected, int) else "")


def read_run_summary(folder: Path) -> RunSummary:
    try:
        record = json.loads((folder / RUN_JSON).read_text("utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        return RunSummary(folder.name, folder, "?", f"unreadable: {RUN_JSON}: {error}")
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    subset = "?"
    if data.get("path"):
        try:
            subset = subset_label(json.loads((Path(data["path"]) / "manifest.json").read_text("utf-8")))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            subset = f"{data.get('pairs', '?')} pairs (export gone)"
    outcome = record.get("outcome") if isinstance(record.get("outcome"), dict) else {}
    return RunSummary(
        folder.name, folder, subset, str(outcome.get("status", "unfinished")), read_metrics(folder / METRICS_JSONL)
    )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every whole record of metrics.jsonl (a line cut short by a kill is skipped)."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def list_runs(runs_dir: Path) -> list[RunSummary]:
    """Every run folder under `runs_dir` (those with a run.json), oldest first by name."""
    if not runs_dir.is_dir():
        return []
    return [
        read_run_summary(folder)
        for folder in sorted(runs_dir.iterdir())
        if folder.is_dir() and (folder / RUN_JSON).exists()
    ]
