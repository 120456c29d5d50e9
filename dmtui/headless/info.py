"""`dmtui info DATA`: what loading a dataset finds, without changing anything."""

from __future__ import annotations

import argparse
import json
import sys

from rich.markup import escape

from dmtui.headless.common import (
    add_dataset_arguments,
    load_config_from_args,
    stderr_console,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print the load report of a dataset or workspace",
        description="Load a dataset (or a workspace's dataset) and report the format, the counts and every "
        "rejected row's reason. Exits 1 when no usable pair is left.",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--all", action="store_true", help="list every rejected row, not the first few")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from core.errors import DmtuiError
    from core.loading import load_dataset
    from core.workspace import Workspace, is_workspace

    try:
        if is_workspace(args.data):
            loaded = Workspace.open(args.data).load()
        else:
            loaded = load_dataset(args.data, load_config_from_args(args), progress=_progress_printer())
    except DmtuiError as error:  # LoadError, or WorkspaceError for a workspace whose dataset changed
        if args.json:
            print(json.dumps({"source": args.data, "read": 0, "loaded": 0, "rejected": {}, "error": str(error)}))
        raise
    report = loaded.report
    if args.json:
        print(json.dumps(report.to_json(include_all=args.all), ensure_ascii=False))
    else:
        print_report(report, show_all=args.all)
    if report.loaded == 0:
        if not args.json:
            stderr_console.print(f"[bold red]error:[/] no usable pairs in {escape(report.source)}; "
                                 f"{escape(report.nothing_usable_hint())}")
        return 1
    return 0


def _progress_printer():
    """Rows-read feedback on a terminal for big files; silent when piped."""
    if not sys.stderr.isatty():
        return None

    def show(progress) -> None:
        stderr_console.print(f"reading… {progress.done:,} rows", end="\r")

    return show


def print_report(report, show_all: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    style = "implicit prompt" if report.prompt_style == "implicit" else "explicit prompt"
    console.print(f"[bold]{escape(report.source)}[/]  ({report.source_kind}, {report.format or 'unknown format'}, {style})")
    mapping = " ".join(f"{role}={column}" for role, column in report.columns.items())
    kept = f"; kept: {', '.join(report.extra_columns)}" if report.extra_columns else ""
    console.print(f"columns: {mapping}{kept}", markup=False)
    console.print(
        f"read [bold]{report.read:,}[/]   loaded [bold green]{report.loaded:,}[/]   "
        f"rejected [bold {'red' if report.rejected_total else 'green'}]{report.rejected_total:,}[/]"
    )
    if report.rejected:
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("reason")
        table.add_column("rows", justify="right")
        table.add_column("first at")
        firsts = report.first_locations()
        for reason, count in sorted(report.rejected.items(), key=lambda item: -item[1]):
            table.add_row(reason, f"{count:,}", ", ".join(firsts.get(reason, [])))
        console.print(table)
    if show_all:
        for rejection in report.rejections:
            console.print(rejection.describe(report.source), markup=False)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
