"""`dmtui` command line: `dmtui` opens the app (its launcher without a dataset; `dmtui DATA`
is `dmtui open DATA`); subcommands run the engine headless.

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
COMMAND_MODULES = ("open", "info", "score", "select", "export", "annotations", "train", "runs", "eval", "iterate",
                   "demo", "serve")


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
    argv = list(sys.argv[1:] if argv is None else argv)
    for argument in argv:
        if not _is_utf8(argument):
            # Bytes that are not UTF-8 (Python holds them as surrogates) cannot be stored in
            # the workspace's JSON or printed; refuse them here rather than fail half-way.
            parser.error(f"argument {ascii(argument)} is not valid UTF-8")
    if argv and argv[0] not in COMMAND_MODULES and not argv[0].startswith("-"):
        argv = ["open", *argv]  # `dmtui DATA` and `dmtui FOLDER` are `dmtui open ...`
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["open", *argv])
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
    except OSError as error:
        # A path the command had to read or write (a file where a folder is needed, no
        # permission, a full disk): the path and the reason are what the user can act on.
        from dmtui.headless.common import print_error

        where = f"{error.filename}: " if error.filename else ""
        print_error(DmtuiError(f"{where}{error.strerror or error}", "check the path and its permissions"))
        return 1


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
