"""`dmtui info DATA`: what loading a dataset finds, without changing anything."""

from __future__ import annotations

import argparse
import json
import sys

from rich.markup import escape

from dmtui.headless.common import (
    add_dataset_arguments,
    load_config_from_args,
    report_console,
    stderr_console,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print the load report of a dataset or workspace",
        description="Load a dataset (or a workspace's dataset) and report its shape, how each prompt was found, "
        "the counts and every rejected row's reason. Exits 1 when no usable pair is left.",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--all", action="store_true", help="list every rejected row, not the first few")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from core.data.loading import load_dataset
    from core.data.shapes import MissingColumnsError
    from core.errors import DmtuiError
    from core.store.workspace import Workspace, is_workspace

    workspace = None
    try:
        if is_workspace(args.data):
            workspace = Workspace.open(args.data)
            loaded = workspace.load()
        else:
            loaded = load_dataset(args.data, load_config_from_args(args), progress=_progress_printer())
    except DmtuiError as error:  # LoadError, or WorkspaceError for a workspace whose dataset changed
        if args.json:
            facts = {"required_columns": error.required, "file_columns": error.found,
                     "suggested_mapping": error.suggestion} if isinstance(error, MissingColumnsError) else {}
            print(json.dumps({"source": args.data, "read": 0, "loaded": 0, "rejected": {}, "error": str(error),
                              **facts}))
        raise
    report = loaded.report
    summary = None
    if workspace is not None:
        from core.store.workspace_summary import summarise

        summary = summarise(workspace, loaded.pairs["pair_id"])
    if args.json:
        print(json.dumps({**report.to_json(include_all=args.all), **({"workspace": summary} if summary else {})},
                         ensure_ascii=False))
    else:
        print_report(report, show_all=args.all)
        if summary is not None:
            print_workspace(summary)
    if report.loaded == 0:
        if not args.json:
            sys.stdout.flush()  # the report, then the error on a line of its own
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
    from rich.table import Table

    from core.data.chat_templates import TEMPLATE_FAMILIES
    from core.data.load_report import SHAPES
    from core.data.roles import BY_NAME
    from core.data.shapes import PROMPT_RULES

    console = report_console()
    style = "implicit prompt" if report.prompt_style == "implicit" else "explicit prompt"
    console.print(f"[bold]{escape(report.source)}[/]  ({report.source_kind}, {report.format or 'unknown format'}, {style})")
    if report.shape:
        console.print(f"shape: {SHAPES.get(report.shape, report.shape)}", markup=False)
    guessed, in_file = set(report.guessed_columns), set(report.file_columns)
    mapping = " ".join(f"{role}={column}{' (by its name)' if role in guessed else ''}"
                       f"{' (not in the file)' if in_file and column not in in_file else ''}"
                       for role, column in report.columns.items())
    kept = f"; kept: {', '.join(report.extra_columns)}" if report.extra_columns else ""
    console.print(f"columns: {mapping}{kept}", markup=False)
    if report.role_markers:
        label = BY_NAME[report.role_markers].label if report.role_markers in BY_NAME else report.role_markers
        console.print(f"role markers: {label} -> {report.role_text}: {report.role_text_reason}", markup=False)
    if report.rendered_templates:
        found = ", ".join(f"{TEMPLATE_FAMILIES[family][0]} in {count:,}"
                          for family, count in report.rendered_templates.items())
        console.print(f"rendered chat template: {found} (scored as written)", markup=False)
    if set(report.prompt_rules) - {"prompt_column"}:
        console.print("prompts found by:")
        for rule, count in report.prompt_rules.items():
            console.print(f"  {count:>9,}  {PROMPT_RULES.get(rule, rule)}", markup=False)
            for example in report.prompt_examples.get(rule, []):
                console.print(f"             {example['location']}: prompt ends {_quoted(example['prompt_end'], -1)}"
                              f" | chosen {_quoted(example['chosen_start'])}"
                              f" | rejected {_quoted(example['rejected_start'])}", markup=False)
    if report.score_columns:
        chosen_col, rejected_col = report.score_columns[0]
        console.print(f"scores: {chosen_col} / {rejected_col} (use --margin external={chosen_col},{rejected_col})",
                      markup=False)
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


def print_workspace(summary: dict) -> None:
    """Scores, annotations, exports and runs of a workspace, a line each."""
    console = report_console()
    console.print(f"[bold]workspace[/] {escape(summary['workspace'])}")
    for table in summary["scores"] or [None]:
        if table is None:
            console.print("  scores: none yet (dmtui score)")
            continue
        models = ", ".join(f"{role} {path}" for role, path in table["models"].items())
        console.print(f"  scores {table['source']} ({table['fingerprint']}): {table['scored']:,} of "
                      f"{table['pairs']:,} pairs; {models or 'no models recorded'}; updated {table['updated']}",
                      markup=False)
    notes = summary["annotations"]
    if notes["annotated"]:
        flags = ", ".join(f"{count:,} {flag}" for flag, count in notes["flags"].items()) or "no flags"
        gone = f"; {notes['not_in_data']:,} for pairs no longer in the data" if notes["not_in_data"] else ""
        console.print(f"  annotations: {notes['annotated']:,} pairs ({flags}; {notes['excluded']:,} excluded, "
                      f"{notes['swapped']:,} swapped, {notes['notes']:,} with a note{gone})", markup=False)
    else:
        console.print("  annotations: none")
    for kind, entries in (("export", summary["exports"]), ("run", summary["runs"])):
        if not entries:
            console.print(f"  {kind}s: none")
        for entry in entries:
            details = ", ".join(f"{key} {value}" for key, value in entry.items() if key != "name" and value is not None)
            console.print(f"  {kind} {entry['name']}: {details}", markup=False)


def _quoted(text: str, keep: int = 1, width: int = 40) -> str:
    """Text as a short JSON string (newlines visible), cut to `width` from the end that matters."""
    cut = text if len(text) <= width else ("…" + text[-width:] if keep < 0 else text[:width] + "…")
    return json.dumps(cut, ensure_ascii=False)
