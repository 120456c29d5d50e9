"""Pieces every headless subcommand shares: column-mapping options, errors, progress."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape

from core.errors import DmtuiError

stderr_console = Console(stderr=True, highlight=False, soft_wrap=True)


def report_console() -> Console:
    """A console for reports on stdout: wrapped to a terminal's width, never hard-wrapped
    when piped (a pipe has no width; lines stay whole for grep and for files)."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 10_000  # tables at their natural width, not squeezed into 80 columns
    return console


def print_error(error: DmtuiError) -> None:
    """One readable error on stderr: the message, then what to do.

    Messages quote paths, column names and data, which may hold "[...]": escaped, so
    Rich prints them as they are instead of reading them as markup.
    """
    stderr_console.print(f"[bold red]error:[/] {escape(error.message)}", markup=True, soft_wrap=True)
    if error.hint:
        stderr_console.print(f"[yellow]hint:[/] {escape(error.hint)}", markup=True, soft_wrap=True)


def path_argument(text: str) -> str:
    """argparse type of a path option: an empty one would quietly mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return text


def add_dataset_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """DATA plus the loading options every command that reads a dataset accepts."""
    parser.add_argument(
        "data",
        metavar="DATA",
        type=path_argument,
        nargs=None if required else "?",
        help="a .jsonl/.json/.parquet/.csv file, a datasets.save_to_disk folder, or a hub id",
    )
    group = parser.add_argument_group("loading")
    group.add_argument("--prompt-col", metavar="COL", help="column holding the prompt")
    group.add_argument("--chosen-col", metavar="COL", help="column holding the chosen response")
    group.add_argument("--rejected-col", metavar="COL", help="column holding the rejected response")
    group.add_argument("--system-col", metavar="COL",
                       help="column holding a system message put before the prompt (default: system, when present)")
    group.add_argument("--keep-role-text", action="store_true",
                       help="keep role-marked text (HH-RLHF Human:/Assistant: ...) as text, split at its last "
                       "assistant turn, instead of turning it into conversations")
    group.add_argument("--split", default=None, help="split of a hub or save_to_disk dataset (default: train)")
    group.add_argument("--strict", action="store_true", help="stop at the first bad row instead of skipping it")
    group.add_argument(
        "--max-field-chars",
        type=int,
        default=None,
        metavar="N",
        help="reject fields longer than N characters (default: 1,000,000)",
    )


def load_config_from_args(args: argparse.Namespace):
    from core.loading import LoadConfig

    defaults = LoadConfig()
    return LoadConfig(
        prompt_col=args.prompt_col,
        chosen_col=args.chosen_col,
        rejected_col=args.rejected_col,
        system_col=args.system_col,
        keep_role_text=args.keep_role_text,
        split=args.split,
        strict=args.strict,
        max_field_chars=args.max_field_chars or defaults.max_field_chars,
    )


@contextmanager
def rich_progress() -> Iterator[Callable]:
    """A core progress callback drawing one rich bar per stage on stderr, with rate and ETA.

    A new stage closes the bars of the earlier ones (their work is over).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bars = Progress(
        TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>12}"), TextColumn("ETA {task.fields[eta]:>6}"), TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"), console=stderr_console,
    )
    tasks: dict[str, int] = {}

    def update(report) -> None:
        if report.stage not in tasks:
            for task in tasks.values():
                done = bars.tasks[task].completed or 1
                bars.update(task, total=bars.tasks[task].total or done, completed=done)
                bars.stop_task(task)
            tasks[report.stage] = bars.add_task(report.stage, total=report.total, rate="", eta="", message="")
        rate = f"{report.rate:,.1f} {report.unit}/s" if report.rate else ""
        eta = f"{report.eta_s:.0f}s" if report.eta_s is not None else "-"
        bars.update(tasks[report.stage], completed=report.done, total=report.total, rate=rate, eta=eta,
                    message=report.message)

    with bars:
        yield update


def terminal_progress():
    """`rich_progress()` when stderr is a terminal; a no-op context (None) when it is piped."""
    from contextlib import nullcontext

    return rich_progress() if is_tty() else nullcontext(None)


def fail(message: str, hint: str | None = None) -> None:
    raise DmtuiError(message, hint)


def is_tty() -> bool:
    return sys.stderr.isatty()


def add_workspace_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace",
        metavar="DIR",
        type=path_argument,
        help="workspace to read scores and annotations from (default: DATA itself if it is one, "
        "else the one next to the dataset when it exists)",
    )
    parser.add_argument(
        "--accept-changes", action="store_true", help="the dataset changed since the workspace saw it: use the new one"
    )


def open_data(args: argparse.Namespace, progress=None):
    """(dataset, workspace or None, dataset ref, load config) for a DATA argument.

    DATA may be a workspace folder; otherwise the dataset's workspace is used when one
    exists (so scores and annotations apply), and none is created.
    """
    from pathlib import Path

    from core.loading import load_dataset
    from core.workspace import (
        Workspace,
        dataset_ref,
        default_workspace_path,
        is_workspace,
    )

    root = args.workspace or (args.data if is_workspace(args.data) else None)
    if root is None and Path(args.data).exists() and is_workspace(default_workspace_path(args.data)):
        root = default_workspace_path(args.data)
    if root is not None:
        workspace = Workspace.open(root, accept_changes=args.accept_changes)
        return workspace.load(progress=progress), workspace, workspace.dataset, workspace.load_config
    config = load_config_from_args(args)
    dataset = load_dataset(args.data, config, progress=progress)
    return dataset, None, dataset_ref(args.data), config


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("margins and selection")
    group.add_argument(
        "--margin",
        action="append",
        default=[],
        metavar="NAME[=COL[,COL]]",
        help="a margin source: NAME=COLUMN (a margin column), NAME=CHOSEN_COL,REJECTED_COL (per-response "
        "scores), or NAME (the workspace's newest score table of that name). Repeat for several; default: "
        "every score table in the workspace",
    )
    group.add_argument("--mode", default="dm-mul", help="dm-mul | dm-add | top | mid | bot | random | low-gap")
    group.add_argument("--source", help="margin source ranked by top / mid / bot (default: the only one)")
    group.add_argument("--budget", default="0.1", help="pairs to keep: a count (600), a fraction (0.1) or 10%%")
    group.add_argument("--m1", action="append", default=[], metavar="[NAME=]VALUE",
                       help="DM-MUL lower clip, for all sources or per source (default -2)")
    group.add_argument("--m2", action="append", default=[], metavar="[NAME=]VALUE|auto",
                       help="DM-MUL upper clip, a number or auto, for all or per source (default auto)")
    group.add_argument("--tau", type=float, help="MID window |m| <= tau (default 0.1 for ifd, 1.0 otherwise)")
    group.add_argument("--trim", type=float, default=0.01, help="outlier trim at each end before top/mid/bot")
    group.add_argument("--seed", type=int, default=0, help="seed of random and MID samples")


def _per_source(values: list[str], option: str, allow_auto: bool):
    """'--m2 auto' -> 'auto'; '--m2 3' -> 3.0; '--m2 external=3 --m2 implicit=auto' -> mapping."""
    def number(text: str):
        if allow_auto and text.strip() == "auto":
            return "auto"
        try:
            return float(text)
        except ValueError:
            fail(f"{option} {text!r}: not a number" + (" or auto" if allow_auto else ""))

    if not values:
        return None
    plain = [v for v in values if "=" not in v]
    named = [v for v in values if "=" in v]
    if plain and (named or len(plain) > 1):
        fail(f"{option}: give one value for every source, or NAME=VALUE per source, not both")
    if plain:
        return number(plain[0])
    return {name.strip(): number(value) for name, value in (v.split("=", 1) for v in named)}


def selection_params_from_args(args: argparse.Namespace, margin_names: list[str]):
    from core.selection import SelectionParams, parse_budget

    source = args.source
    if args.mode in ("top", "mid", "bot") and source is None:
        if len(margin_names) != 1:
            fail(f"--mode {args.mode} ranks one margin source: pass --source (one of {', '.join(margin_names)})")
        source = margin_names[0]
    options = {
        "mode": args.mode,
        "budget": parse_budget(args.budget),
        "sources": tuple(margin_names),
        "source": source,
        "tau": args.tau,
        "trim": args.trim,
        "seed": args.seed,
    }
    m1 = _per_source(args.m1, "--m1", allow_auto=False)
    m2 = _per_source(args.m2, "--m2", allow_auto=True)
    if m1 is not None:
        options["m1"] = m1
    if m2 is not None:
        options["m2"] = m2
    return SelectionParams(**options)


def selection_from_args(args: argparse.Namespace):
    """Load DATA, resolve its margins and run the selection the options describe.

    Returns (dataset, workspace or None, dataset ref, load config, resolved margins,
    annotations honoured, selection): what `select` summarises and `export` writes.
    """
    from core.export import annotated_from_workspace, run_selection
    from core.margin_sources import resolve_margins

    dataset, workspace, ref, load_config = open_data(args)
    resolved = resolve_margins(dataset, margin_specs_from_args(args, workspace), workspace)
    params = selection_params_from_args(args, list(resolved.margins))
    annotated = annotated_from_workspace(workspace)
    selection = run_selection(dataset, resolved, params, annotated)
    return dataset, workspace, ref, load_config, resolved, annotated, selection


def margin_specs_from_args(args: argparse.Namespace, workspace) -> list:
    from core.margin_sources import MarginSpec
    from core.scores import list_score_tables

    if args.margin:
        return [MarginSpec.parse(text) for text in args.margin]
    if workspace is not None:
        names = list(dict.fromkeys(info.source for info in list_score_tables(workspace.scores_dir)))
        if names:
            return [MarginSpec(name) for name in names]
    fail(
        "no margin sources: the workspace has no scores and no --margin was given",
        "pass --margin NAME=COLUMN (or NAME=CHOSEN_COL,REJECTED_COL), or run `dmtui score` first",
    )
