"""`dmtui export`: write a selected subset and its manifest; or rebuild one from a manifest."""

from __future__ import annotations

import argparse
import json

from dmtui.headless.common import (
    add_dataset_arguments,
    add_selection_arguments,
    add_workspace_arguments,
    describe_settings,
    fail,
    path_argument,
    selection_options_given,
    session_from_args,
    settings_line,
)

_EXPORT_OPTIONS = ("format", "no_scores", "drop_flagged")
"""Export options a rebuild takes from its manifest instead."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from core.curation.session import DEFAULT_DROP_FLAGGED
    from core.store.annotations import FLAGS

    parser = subparsers.add_parser(
        "export",
        help="write the selected subset with a manifest (or rebuild one with --manifest)",
        description="Select pairs and write them, in the input's own format with every original column, "
        "plus annotations.jsonl (flags and notes) and manifest.json, from which `dmtui export --manifest` "
        "rebuilds the same subset byte for byte.",
    )
    add_dataset_arguments(parser, required=False)  # not needed with --manifest
    add_workspace_arguments(parser)
    add_selection_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", type=path_argument, help="export folder to create")
    parser.add_argument("--format", help="auto (the input's; default) | jsonl | parquet | save_to_disk | csv "
                        "(lists and records, e.g. conversations, become JSON text in CSV cells)")
    parser.add_argument("--no-scores", action="store_true", help="leave out the margin and score columns")
    parser.add_argument("--drop-flagged", metavar="FLAG[,FLAG]|none",
                        help=f"leave out selected pairs that carry any of these flags ({', '.join(FLAGS)}); "
                        f"default: the workspace's choice, else {','.join(DEFAULT_DROP_FLAGGED)}; a pair "
                        "flagged mislabeled that was swapped is kept (the swap fixed it)")
    parser.add_argument("--force", action="store_true", help="replace an existing export folder")
    parser.add_argument("--manifest", metavar="FILE", type=path_argument,
                        help="rebuild the export this manifest describes (with its own settings)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary of what was written")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from core.curation.session import kept_flag_counts
    from core.export.exporter import rebuild_from_manifest

    settings = None
    if args.manifest:
        ignored = selection_options_given(args) + [
            "--" + name.replace("_", "-") for name in _EXPORT_OPTIONS if getattr(args, name) not in (None, False)]
        if args.data is not None:
            ignored.insert(0, f"DATA ({args.data})")
        if ignored:
            fail(f"--manifest rebuilds an export with the settings it records; {', '.join(ignored)} cannot apply",
                 "leave them out to rebuild, or drop --manifest to make a new export with them")
        manifest = rebuild_from_manifest(args.manifest, args.out, force=args.force)
    else:
        if args.data is None:
            fail("export needs DATA (a dataset or workspace), or --manifest to rebuild an export")
        session, parsed, origins = session_from_args(args)
        selection = session.select(parsed.params)
        settings = describe_settings(parsed, origins)
        manifest = session.export(selection, args.out, drop_flagged=parsed.drop_flagged, fmt=args.format or "auto",
                                  include_scores=not args.no_scores, force=args.force)
    counts = manifest["counts"]
    summary = {"out": args.out, "selected": counts["selected"], "total": counts["total"],
               "dropped_flagged": counts.get("dropped_flagged", 0),
               "dropped_pair_ids": manifest.get("export", {}).get("dropped_pair_ids", []),
               "spared_pair_ids": manifest.get("export", {}).get("spared_pair_ids", []),
               "flagged_selected": counts.get("flagged_selected", {}),
               "format": manifest["output"]["format"], "sha256": manifest["output"]["sha256"]}
    if settings is not None:
        summary["settings"] = settings
    if args.json:
        print(json.dumps(summary))
        return 0
    if settings is not None:
        print(settings_line(settings))
    print(f"wrote {summary['selected']:,} of {summary['total']:,} pairs to {args.out} "
          f"({summary['format']}, sha256 {summary['sha256'][:12]})")
    flags = manifest["annotations"].get("flags", {})
    if summary["dropped_flagged"]:
        print(f"dropped {summary['dropped_flagged']:,} flagged pairs: "
              + ", ".join(f"{pid} ({', '.join(flags.get(pid, []))})" for pid in summary["dropped_pair_ids"][:20])
              + (" …" if summary["dropped_flagged"] > 20 else ""))
    spared = summary["spared_pair_ids"]
    if spared:
        print("kept mislabeled pairs the curator swapped (the swap fixed them): "
              + ", ".join(spared[:20]) + (" …" if len(spared) > 20 else ""))
    kept = kept_flag_counts(summary["flagged_selected"], len(spared))
    if kept:
        print("warning: the export keeps flagged pairs: " + ", ".join(f"{flag} {n}" for flag, n in kept.items())
              + " (their flags are in annotations.jsonl; --drop-flagged leaves them out)")
    return 0
