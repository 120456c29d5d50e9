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


def add_dataset_arguments(parser: argparse.ArgumentParser, required: bool = True) -> list[argparse.Action]:
    """DATA plus the loading options every command that reads a dataset accepts; returns the options."""
    parser.add_argument(
        "data",
        metavar="DATA",
        type=path_argument,
        nargs=None if required else "?",
        help="a .jsonl/.json/.parquet/.csv file, a datasets.save_to_disk folder, or a hub id",
    )
    group = parser.add_argument_group("loading")
    return [
        group.add_argument("--prompt-col", metavar="COL", help="column holding the prompt"),
        group.add_argument("--chosen-col", metavar="COL", help="column holding the chosen response"),
        group.add_argument("--rejected-col", metavar="COL", help="column holding the rejected response"),
        group.add_argument("--system-col", metavar="COL", help="column holding a system message put before "
                           "the prompt (default: system, when present)"),
        group.add_argument("--keep-role-text", action="store_true",
                           help="keep role-marked text (HH-RLHF Human:/Assistant: ...) as text, split at its last "
                           "assistant turn, instead of turning it into conversations"),
        group.add_argument("--split", default=None, help="split of a hub or save_to_disk dataset (default: train)"),
        group.add_argument("--strict", action="store_true", help="stop at the first bad row instead of skipping it"),
        group.add_argument("--max-field-chars", type=int, default=None, metavar="N",
                           help="reject fields longer than N characters (default: 1,000,000)"),
    ]


def dataset_options(args: argparse.Namespace) -> list[str]:
    """The loading options given in `args`, as the words that pass them on to another `dmtui` command."""
    words: list[str] = []
    for option in add_dataset_arguments(argparse.ArgumentParser(add_help=False)):
        value = getattr(args, option.dest, None)
        if value is None or value is False:
            continue
        words += [option.option_strings[0]] if option.nargs == 0 else [option.option_strings[0], str(value)]
    return words


def load_config_from_args(args: argparse.Namespace):
    from core.data.loading import LoadConfig

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
        help="workspace to read scores, annotations and the saved selection from, made if it does not exist "
        "(default: DATA itself if it is one, else the one next to the dataset when it exists)",
    )
    parser.add_argument(
        "--accept-changes", action="store_true", help="the dataset changed since the workspace saw it: use the new one"
    )


def open_data(args: argparse.Namespace, progress=None):
    """(dataset, workspace or None, dataset ref, load config) for a DATA argument.

    DATA may be a workspace folder; otherwise `--workspace` (made when it does not exist,
    and removed again if the dataset loads nothing), or the dataset's own workspace when
    one exists (so scores, annotations and the saved selection apply). Without either,
    no workspace is made.
    """
    from pathlib import Path

    from core.data.loading import load_dataset
    from core.store.workspace import (
        Workspace,
        dataset_ref,
        default_workspace_path,
        is_workspace,
    )

    config = load_config_from_args(args)
    if is_workspace(args.data):
        workspace = Workspace.open(args.data, accept_changes=args.accept_changes)
    elif args.workspace or (Path(args.data).exists() and is_workspace(default_workspace_path(args.data))):
        workspace = Workspace.open_or_create(args.data, args.workspace, config, accept_changes=args.accept_changes)
    else:
        dataset = load_dataset(args.data, config, progress=progress)
        return dataset, None, dataset_ref(args.data), config
    return workspace.load_or_discard(progress=progress), workspace, workspace.dataset, workspace.load_config


_SELECTION_OPTIONS = ("margin", "mode", "source", "budget", "fuse", "weight", "m1", "m2", "tau", "trim", "seed",
                      "saturated_ties", "defaults")
"""The dests of `add_selection_arguments`: what `--manifest` cannot be combined with."""


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """The selection options. Each one left out takes the workspace's saved selection (what
    the app shows), else the default; `--defaults` ignores the saved selection."""
    from core.curation.session import DEFAULT_BUDGET, MODE_LABELS
    from core.selection.selector import DEFAULT_M1, DEFAULT_TRIM, SATURATED_TIES

    group = parser.add_argument_group(
        "margins and selection",
        "Options left out take the workspace's saved selection (the app's Curate tab), else the default shown.")
    group.add_argument(
        "--margin",
        action="append",
        default=[],
        metavar="NAME[=COL[,COL]]",
        help="a margin source: NAME=COLUMN (a margin column), NAME=CHOSEN_COL,REJECTED_COL (per-response "
        "scores), or NAME (the workspace's newest score table of that name). Repeat for several; default: the "
        "workspace's (`dmtui open --margin`), plus every score table in it",
    )
    modes = ", ".join(f"{mode} ({label})" if label.lower() != mode else mode for mode, label in MODE_LABELS.items())
    group.add_argument("--mode", help=f"{modes}; any case (default dm-mul)")
    group.add_argument("--source", help="margin source ranked by top / mid / bot (default: external, else implicit, "
                       "else the first)")
    group.add_argument("--budget", help=f"pairs to keep: a count (600), a fraction (0.1) or 10%% (default "
                       f"{DEFAULT_BUDGET.replace('%', '%%')})")
    group.add_argument("--fuse", metavar="NAME[,NAME]",
                       help="sources DM-MUL / DM-ADD fuse (default: every source but ifd)")
    group.add_argument("--weight", action="append", default=[], metavar="NAME=W",
                       help="weight of a fused source: an exponent on its odds in DM-MUL, a factor in DM-ADD "
                       "(default 1); repeat per source")
    group.add_argument("--m1", action="append", default=[], metavar="[NAME=]VALUE",
                       help=f"DM-MUL lower clip, for all sources or per source (default {DEFAULT_M1:g})")
    group.add_argument("--m2", action="append", default=[], metavar="[NAME=]VALUE|auto",
                       help="DM-MUL upper clip, a number or auto, for all or per source (default auto)")
    group.add_argument("--tau", help="MID window |m| <= tau (default 0.1 for ifd, 1.0 otherwise)")
    group.add_argument("--trim", help="share of the margins dropped at each end before top / mid / bot / low-gap, "
                       f"as 1%% or 0.01 (default {DEFAULT_TRIM * 100:g}%%); 0 keeps the extremes")
    group.add_argument("--seed", help="seed of random and MID samples (default 0)")
    group.add_argument("--saturated-ties", choices=SATURATED_TIES,
                       help="DM-MUL pairs whose fused score rounds to the same value: pair-id (the paper's formula, "
                       "default) or margin-sum (fused log-odds, then the sum of standardised margins)")
    group.add_argument("--defaults", action="store_true",
                       help="ignore the workspace's saved selection: every option left out takes its default")


def selection_options_given(args: argparse.Namespace) -> list[str]:
    """The selection options given on the command line, as the user wrote them."""
    given = []
    for dest in _SELECTION_OPTIONS:
        value = getattr(args, dest, None)
        if value not in (None, [], False):
            given.append("--" + dest.replace("_", "-"))
    return given


def _per_source(values: list[str], option: str, sources: list[str]) -> dict[str, str]:
    """'--m2 auto' -> every source; '--m2 external=3 --m2 implicit=auto' -> those sources."""
    plain = [v for v in values if "=" not in v]
    named = [v for v in values if "=" in v]
    if plain and (named or len(plain) > 1):
        fail(f"{option}: give one value for every source, or NAME=VALUE per source, not both")
    if plain:
        return {name: plain[0] for name in sources}
    return {name.strip(): value for name, value in (v.split("=", 1) for v in named)}


def choice_options_from_args(args: argparse.Namespace, sources: list[str]) -> dict:
    """The selection options given, as `core.curation.session.merge_choices` takes them (text per control)."""
    options: dict = {}
    for name in ("mode", "budget", "source", "tau", "trim", "seed", "saturated_ties"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = str(value)
    if args.fuse is not None:
        options["fuse"] = tuple(name.strip() for name in args.fuse.split(",") if name.strip())
    for name, option in (("m1", "--m1"), ("m2", "--m2")):
        if getattr(args, name):
            options[name] = _per_source(getattr(args, name), option, sources)
    if args.weight:
        if any("=" not in text for text in args.weight):
            fail("--weight takes NAME=W, e.g. --weight implicit=0.5")
        options["weights"] = _per_source(args.weight, "--weight", sources)
    drop = getattr(args, "drop_flagged", None)
    if drop is not None:
        options["drop_flagged"] = () if drop.strip().lower() == "none" else tuple(
            flag.strip() for flag in drop.split(",") if flag.strip())
    return options


def session_from_args(args: argparse.Namespace, progress=None):
    """Load DATA with its margins and annotations, and parse the selection the options, the
    workspace's saved selection and the defaults describe.

    Returns (session, parsed choices, origins): origins name, per control, whether its value
    came from an option, the workspace or the default. Problems with the choices are raised
    as one error naming every control at fault.
    """
    from core.curation.session import CurationSession, margin_specs_for, merge_choices
    from core.store.margin_sources import MarginSpec, resolve_margins

    dataset, workspace, ref, load_config = open_data(args, progress)
    specs = margin_specs_for(workspace, [MarginSpec.parse(text) for text in args.margin])
    resolved = resolve_margins(dataset, specs, workspace)
    session = CurationSession.from_workspace(dataset, resolved, workspace, dataset_ref=ref, load_config=load_config)
    stored = None if args.defaults else session.stored_choices()
    choices, origins = merge_choices(stored, choice_options_from_args(args, session.sources))
    parsed = session.parse(choices)
    if not parsed.ok:
        raise parsed.error()
    return session, parsed, origins


def describe_settings(parsed, origins: dict) -> dict[str, dict[str, str]]:
    """The controls a selection used: their values and where each came from."""
    from core.curation.session import used_controls

    return {control: {"value": value, "from": origins.get(control, "default")}
            for control, value in used_controls(parsed.params, parsed.drop_flagged).items()}


def settings_line(settings: dict[str, dict[str, str]]) -> str:
    """The settings on one line, each with where it came from when that is not the default."""
    parts = [f"{control} {entry['value']}" + ("" if entry["from"] == "default" else f" ({entry['from']})")
             for control, entry in settings.items()]
    return "settings: " + "; ".join(parts)
