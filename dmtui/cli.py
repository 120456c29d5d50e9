"""`dmtui` command line: `dmtui` opens the app; subcommands run the engine headless.

Exit codes are an API: 0 success, 1 a reported failure (bad input, nothing usable),
2 bad usage, 130 cancelled (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import Sequence

# Subcommand modules under dmtui.headless, in the order `--help` lists them.
COMMAND_MODULES = ("open", "info", "score", "select", "export", "train", "eval", "iterate", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmtui",
        description="Curate preference datasets for DPO with the Dual-Margin method.",
    )
    from dmtui import __version__

    parser.add_argument("--version", action="version", version=f"dmtui {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"dmtui.headless.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from core.errors import DmtuiError

    # transformers 5 renamed gradient checkpointing and TRL still calls the old names:
    # a deprecation notice per call is noise to a curator, not something to act on.
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["open", *(argv or sys.argv[1:])])
    try:
        return int(args.handler(args) or 0)
    except DmtuiError as error:
        from dmtui.headless.common import print_error

        print_error(error)
        return error.exit_code
    except KeyboardInterrupt:
        print("dmtui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`dmtui info ... | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
