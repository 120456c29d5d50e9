"""`dmtui runs WORKSPACE`: the workspace's training runs compared, as the app's runs view."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dmtui.headless.common import fail, path_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="compare the training runs of a workspace: subset, status, steps, final loss, margin, accuracy",
        description="List every `dmtui train` run under WORKSPACE/runs with the subset it trained on and its "
        "last logged metrics (4 significant digits), oldest first.",
    )
    parser.add_argument("workspace", metavar="WORKSPACE", type=path_argument, help="a workspace folder")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per run, with every metrics record (the curves)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from core.store.workspace import is_workspace
    from core.training.runs import CURVES, list_runs

    if not is_workspace(args.workspace):
        fail(f"{args.workspace} is not a dmtui workspace", "pass the folder `dmtui open` or `dmtui score` made")
    runs = list_runs(Path(args.workspace) / "runs")
    if args.json:
        for summary in runs:
            print(json.dumps({"run": summary.name, "path": str(summary.path), "subset": summary.subset,
                              "status": summary.status, "steps": summary.steps, "total_steps": summary.total_steps,
                              "last": {key: summary.last(key) for key, _ in CURVES}, "metrics": summary.metrics}))
        return 0
    # Piped output is not cut to 80 columns: a table read by a script or a wide pager stays one line a run.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 10_000)
    if not runs:
        console.print(f"no training runs in {args.workspace}/runs yet", markup=False)
        return 0
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("run", "subset", "status", "steps", *(title for _, title in CURVES)):
        table.add_column(column, justify="left" if column in ("run", "subset", "status") else "right")
    for summary in runs:
        steps = f"{summary.steps}/{summary.total_steps}" if summary.steps is not None else "-"
        table.add_row(summary.name, summary.subset, summary.status, steps,
                      *(f"{v:.4g}" if (v := summary.last(key)) is not None else "-" for key, _ in CURVES))
    console.print(table)
    return 0
