"""`dmtui annotations WORKSPACE`: every flag, note, exclusion and swap a curator made."""

from __future__ import annotations

import argparse
import json

from dmtui.headless.common import path_argument, report_console


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "annotations",
        help="list a workspace's annotations: flags, notes, exclusions, swaps",
        description="List every annotated pair of a workspace (or of the dataset whose workspace sits next to "
        "it), in the dataset's row order, with its row, flags, note, exclusion and swap. Pairs annotated "
        "before the dataset changed, and no longer in it, come last, marked as such. It records nothing in the "
        "workspace, and when the dataset is missing or changed the annotations are still listed (they are all "
        "in the workspace), their rows unknown.",
    )
    parser.add_argument("workspace", metavar="WORKSPACE", type=path_argument,
                        help="a workspace folder, or a dataset that has one next to it")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument("--out", metavar="FILE", type=path_argument,
                        help="write JSON lines, one annotated pair a line, to FILE")
    parser.add_argument("--accept-changes", action="store_true",
                        help="the dataset changed since the workspace saw it: find the rows in the new version "
                        "(the workspace itself is left as it was)")
    parser.set_defaults(handler=run)


def listed_pairs(workspace, accept_changes: bool):
    """The pairs whose rows the listing names, or None and why not. Nothing is written:
    the annotations are all in the store, so a missing or changed dataset only leaves the
    rows unknown, and --accept-changes reads the new version without recording it."""
    from core.data.loading import load_dataset
    from core.errors import DmtuiError

    try:
        current = workspace.current_dataset()
        if current.checksum == workspace.dataset.checksum:
            return workspace.load().pairs, None
        if not accept_changes:
            return None, (f"{workspace.dataset.describe_change(current)}; --accept-changes finds the rows in the "
                          "new version")
        return load_dataset(current.source, workspace.load_config).pairs, None
    except DmtuiError as error:
        return None, error.message


def annotation_records(annotations: dict, pairs) -> list[dict]:
    """Every annotation as a record with its row: None when the pair is not in the data,
    and `in_data` None as well when `pairs` is None (the rows are unknown)."""
    import pyarrow.compute as pc

    from core.data.pairs import as_text

    if pairs is None:
        records = [{**a.to_json(), "row": None, "in_data": None, "prompt": None} for a in annotations.values()]
        return sorted(records, key=lambda r: r["pair_id"])
    ids = pairs["pair_id"]
    positions = pc.index_in(pc.cast(list(annotations), "string"), value_set=ids).to_pylist() if annotations else []
    records = []
    for annotation, position in zip(annotations.values(), positions):
        prompt = as_text(pairs["prompt"][position].as_py()) if position is not None else None
        row = pairs["row_index"][position].as_py() if position is not None else None
        records.append({**annotation.to_json(), "row": row, "in_data": position is not None,
                        "prompt": prompt})
    records.sort(key=lambda r: (not r["in_data"], r["row"] if r["row"] is not None else 0, r["pair_id"]))
    return records


def run(args: argparse.Namespace) -> int:
    import sys
    from collections import Counter
    from pathlib import Path

    from core.errors import WorkspaceError
    from core.export.exporter import read_annotations
    from core.io.atomic import atomic_write_bytes
    from core.store.annotations import FLAGS
    from core.store.workspace import Workspace, default_workspace_path, is_workspace

    root = args.workspace
    if not is_workspace(root) and Path(root).exists() and is_workspace(default_workspace_path(root)):
        root = default_workspace_path(root)
    if not is_workspace(root):
        raise WorkspaceError(f"{args.workspace} is not a dmtui workspace, and no workspace sits next to it",
                             "give the workspace folder (DATA.dmtui), made by `dmtui open` or `dmtui score`")
    workspace = Workspace.read(root)
    annotations = read_annotations(workspace)
    pairs, unknown_rows = listed_pairs(workspace, args.accept_changes) if annotations else (None, None)
    if unknown_rows:
        print(f"note: rows unknown, the annotations are listed from {workspace.annotations_path.name} alone: "
              f"{unknown_rows}", file=sys.stderr)
    records = annotation_records(annotations, pairs)
    flags = Counter(flag for record in records for flag in record["flags"])
    counts = {"annotated": len(records), **{flag: flags[flag] for flag in FLAGS},
              "notes": sum(bool(r["note"]) for r in records), "excluded": sum(r["excluded"] for r in records),
              "swapped": sum(r["swapped"] for r in records),
              "not_in_data": sum(r["in_data"] is False for r in records)}
    if args.out:
        text = "".join(json.dumps({k: v for k, v in r.items() if k != "prompt"}, ensure_ascii=False) + "\n"
                       for r in records)
        atomic_write_bytes(Path(args.out), text.encode("utf-8"))
        print(f"wrote {len(records):,} annotated pairs to {args.out}")
        return 0
    if args.json:
        print(json.dumps({"workspace": str(workspace.root), "counts": counts, "rows_unknown": unknown_rows,
                          "annotations": records}, ensure_ascii=False))
        return 0
    print_table(records, counts)
    return 0


def print_table(records: list[dict], counts: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    console = report_console()
    summary = ", ".join(f"{name} {n:,}" for name, n in counts.items() if n and name != "annotated")
    console.print(f"{counts['annotated']:,} annotated pairs" + (f": {summary}" if summary else ""),
                  markup=False)
    if not records:
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("row", "pair_id", "flags", "excluded", "swapped", "note", "prompt"):
        table.add_column(column, justify="right" if column == "row" else "left", overflow="fold")
    for r in records:
        prompt = " ".join((r["prompt"] or "").split())
        row = {True: str(r["row"]), False: "not in data", None: "unknown"}[r["in_data"]]
        table.add_row(row, r["pair_id"], ", ".join(r["flags"]),
                      "yes" if r["excluded"] else "", "yes" if r["swapped"] else "",
                      Text(r["note"]), Text(prompt[:60] + ("…" if len(prompt) > 60 else "")))
    console.print(table)
