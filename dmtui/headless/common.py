"""Pieces every headless subcommand shares: column-mapping options, errors, progress."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from core.errors import DmtuiError

stderr_console = Console(stderr=True, highlight=False)


def print_error(error: DmtuiError) -> None:
    """One readable error on stderr: the message, then what to do."""
    stderr_console.print(f"[bold red]error:[/] {error.message}", markup=True, soft_wrap=True)
    if error.hint:
        stderr_console.print(f"[yellow]hint:[/] {error.hint}", markup=True, soft_wrap=True)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """DATA plus the loading options every command that reads a dataset accepts."""
    parser.add_argument(
        "data",
        metavar="DATA",
        help="a .jsonl/.json/.parquet/.csv file, a datasets.save_to_disk folder, or a hub id",
    )
    group = parser.add_argument_group("loading")
    group.add_argument("--prompt-col", metavar="COL", help="column holding the prompt")
    group.add_argument("--chosen-col", metavar="COL", help="column holding the chosen response")
    group.add_argument("--rejected-col", metavar="COL", help="column holding the rejected response")
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
        split=args.split,
        strict=args.strict,
        max_field_chars=args.max_field_chars or defaults.max_field_chars,
    )


def fail(message: str, hint: str | None = None) -> None:
    raise DmtuiError(message, hint)


def is_tty() -> bool:
    return sys.stderr.isatty()
