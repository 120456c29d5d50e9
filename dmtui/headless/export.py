"""`dmtui export`: write a selected subset and its manifest; or rebuild one from a manifest."""

from __future__ import annotations

import argparse
import json

from dmtui.headless.common import (
    add_dataset_arguments,
    add_selection_arguments,
    add_workspace_arguments,
    fail,
    path_argument,
    selection_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write the selected subset with a manifest (or rebuild one with --manifest)",
        description="Select pairs and write them, in the input's own format with every original column, "
        "plus manifest.json, from which `dmtui export --manifest` rebuilds the same subset byte for byte.",
    )
    add_dataset_arguments(parser, required=False)  # not needed with --manifest
    add_workspace_arguments(parser)
    add_selection_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", type=path_argument, help="export folder to create")
    parser.add_argument("--format", default="auto", help="auto (the input's) | jsonl | parquet | save_to_disk | csv")
    parser.add_argument("--no-scores", action="store_true", help="leave out the margin and score columns")
    parser.add_argument("--force", action="store_true", help="replace an existing export folder")
    parser.add_argument("--manifest", metavar="FILE", type=path_argument, help="rebuild the export this manifest describes")
    parser.add_argument("--json", action="store_true", help="print a JSON summary of what was written")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from core.export import export_selection, rebuild_from_manifest

    if args.manifest:
        manifest = rebuild_from_manifest(args.manifest, args.out, force=args.force)
    else:
        if args.data is None:
            fail("export needs DATA (a dataset or workspace), or --manifest to rebuild an export")
        dataset, workspace, ref, load_config, resolved, annotated, selection = selection_from_args(args)
        manifest = export_selection(
            dataset, ref, load_config, resolved, selection, annotated, args.out,
            fmt=args.format, include_scores=not args.no_scores, force=args.force,
            workspace_root=workspace.root if workspace else None,
        )
    summary = {"out": args.out, "selected": manifest["counts"]["selected"], "total": manifest["counts"]["total"],
               "format": manifest["output"]["format"], "sha256": manifest["output"]["sha256"]}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {summary['selected']:,} of {summary['total']:,} pairs to {args.out} "
              f"({summary['format']}, sha256 {summary['sha256'][:12]})")
    return 0
