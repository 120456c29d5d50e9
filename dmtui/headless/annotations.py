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
        "before the dataset changed, and no longer in it, come last, marked as such.",
    )
    parser.add_argument("workspace", metavar="WORKSPACE", type=path_argument,
                        help="a workspace folder, or a dataset that has one next to it")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument("--out", metavar="FILE", type=path_argument,
                        help="write JSON lines, one annotated pair a line, to FILE")
    parser.add_argument("--accept-changes", action="store_true",
                        help="the dataset changed since the workspace saw it: use the new one")
    parser.set_defaults(handler=run)


def annotation_records(workspace) -> list[dict]:
    """Every annotation as a record with its row (None when the pair is not in the data)."""
    import pyarrow.compute as pc

    from core.export import read_annotations
    from core.pairs import as_text

    annotations = read_annotations(workspace)
    if not annotations:
        return []
    pairs = workspace.load().pairs
    ids = pairs["pair_id"]
    positions = pc.index_in(pc.cast(list(annotations), "string"), value_set=ids).to_pylist()
    records = []
    for annotation, position in zip(annotations.values(), positions):
        prompt = as_text(pairs["prompt"][position].as_py()) if position is not None else None
        row = pairs["row_index"][position].as_py() if position is not None else None
        records.append({**annotation.to_json(), "row": row, "in_data": position is not None,
                        "prompt": prompt})
    records.sort(key=lambda r: (not r["in_data"], r["row"] if r["row"] is not None else 0, r["pair_id"]))
    return records


def run(args: argparse.Namespace) -> int:
    from collections import Counter
    from pathlib import Path

    from core.annotations import FLAGS
    from core.errors import WorkspaceError
    from core.workspace import Workspace, atomic_write_bytes, default_workspace_path, is_workspace

    root = args.workspace
    if not is_workspace(root) and Path(root).exists() and is_workspace(default_workspace_path(root)):
        root = default_workspace_path(root)
    if not is_workspace(root):
        raise WorkspaceError(f"{args.workspace} is not a dmtui workspace, and no workspace sits next to it",
                             "give the workspace folder (DATA.dmtui), made by `dmtui open` or `dmtui score`")
    workspace = Workspace.open(root, accept_changes=args.accept_changes)
    records = annotation_records(workspace)
    flags = Counter(flag for record in records for flag in record["flags"])
    counts = {"annotated": len(records), **{flag: flags[flag] for flag in FLAGS},
              "notes": sum(bool(r["note"]) for r in records), "excluded": sum(r["excluded"] for r in records),
              "swapped": sum(r["swapped"] for r in records), "not_in_data": sum(not r["in_data"] for r in records)}
    if args.out:
        text = "".join(json.dumps({k: v for k, v in r.items() if k != "prompt"}, ensure_ascii=False) + "\n"
                       for r in records)
        atomic_write_bytes(Path(args.out), text.encode("utf-8"))
        print(f"wrote {len(records):,} annotated pairs to {args.out}")
        return 0
    if args.json:
        print(json.dumps({"workspace": str(workspace.root), "counts": counts, "annotations": records},
                         ensure_ascii=False))
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
        table.add_row(str(r["row"]) if r["in_data"] else "not in data", r["pair_id"], ", ".join(r["flags"]),
                      "yes" if r["excluded"] else "", "yes" if r["swapped"] else "",
                      Text(r["note"]), Text(prompt[:60] + ("…" if len(prompt) > 60 else "")))
    console.print(table)
