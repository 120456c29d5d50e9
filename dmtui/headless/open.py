"""`dmtui open [DATA | WORKSPACE | FOLDER]`: the curation app.

Without DATA, or with a folder that is neither a workspace nor a saved dataset, the app
opens its launcher there (recent workspaces, a path to open, a browser, the demo).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dmtui.headless.common import (
    add_dataset_arguments,
    load_config_from_args,
    path_argument,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "open",
        help="open the curation app (the default command)",
        description="Open the app on a dataset or a workspace folder. A dataset gets a workspace next to it "
        "(DATA.dmtui) unless --workspace names one. Without DATA, or with any other folder, the app opens "
        "its launcher there.",
    )
    add_dataset_arguments(parser, required=False)
    parser.add_argument("--workspace", metavar="DIR", type=path_argument,
                        help="workspace folder (default: next to the dataset)")
    parser.add_argument(
        "--accept-changes",
        action="store_true",
        help="the dataset changed since the workspace last saw it: load the new version anyway",
    )
    parser.add_argument(
        "--demo-models",
        action="store_true",
        help="build the demo world's tiny models in the background if they are missing",
    )
    parser.add_argument(
        "--margin",
        action="append",
        default=[],
        metavar="NAME=COL[,COL]",
        help="use a margin the data already has (a margin column, or chosen/rejected score columns); "
        "remembered by the workspace. Score tables in the workspace are used as well",
    )
    writer = parser.add_mutually_exclusive_group()
    writer.add_argument("--read-only", action="store_true",
                        help="open without writing annotations or settings (another window holds the workspace)")
    writer.add_argument("--take-over", action="store_true",
                        help="take the workspace from the window that holds it (it turns read-only)")
    models = parser.add_argument_group("models the app scores and trains with (the app shows when these are on)")
    models.add_argument("--trust-remote-code", action="store_true", help="allow models that ship Python code")
    models.add_argument("--allow-pickle", action="store_true", help="allow pickle weight files (can run code)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from core.models.trust import ModelTrust
    from core.store.margin_sources import MarginSpec
    from core.store.workspace import Workspace, is_workspace

    for text in args.margin:
        MarginSpec.parse(text)  # a bad spec fails here, before a workspace is made or the app starts
    trust = ModelTrust(trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
    if args.data is None or opens_launcher(args.data):
        from dmtui.app import DmtuiApp

        DmtuiApp(build_demo_models=args.demo_models, model_trust=trust, start_folder=Path(args.data or ".")).run()
        return 0
    if is_workspace(args.data):
        workspace = Workspace.open(args.data, accept_changes=args.accept_changes)
    else:
        workspace = Workspace.open_or_create(
            args.data, args.workspace, load_config_from_args(args), accept_changes=args.accept_changes
        )
    from dmtui.app import DmtuiApp

    if args.read_only:
        holder = workspace.lock_holder()
        workspace.set_read_only(f"{holder.describe()} holds this workspace" if holder else "opened with --read-only")
    if args.take_over:
        workspace.acquire_lock(take_over=True)
    margin_specs = args.margin or workspace.read_settings().get("margins", [])
    if args.margin:
        workspace.update_settings("margins", args.margin)
    DmtuiApp(workspace, build_demo_models=args.demo_models, margin_specs=margin_specs, model_trust=trust).run()
    return 0


def opens_launcher(data: str) -> bool:
    """A folder that is neither a workspace nor a saved dataset: the launcher browses it."""
    from dmtui.screens.launcher import is_dataset_folder

    path = Path(data).expanduser()
    return path.is_dir() and not is_dataset_folder(path)
