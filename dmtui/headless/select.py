"""`dmtui select`: what a selection keeps, without writing anything."""

from __future__ import annotations

import argparse
import json

import numpy as np
from rich.markup import escape

from dmtui.headless.common import (
    add_dataset_arguments,
    add_selection_arguments,
    add_workspace_arguments,
    selection_from_args,
)

COMPARED_MODES = ("random", "top", "dm-add", "dm-mul")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "select",
        help="summarise a selection: counts, margins, M1/M2, overlap with other strategies",
        description="Run a selection over a dataset's margins and print what it keeps. Nothing is written.",
    )
    add_dataset_arguments(parser)
    add_workspace_arguments(parser)
    add_selection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(handler=run)


def margin_stats(values: np.ndarray) -> dict[str, float | int | None]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"n": 0, "mean": None, "median": None, "min": None, "max": None}
    return {"n": int(finite.size), "mean": float(finite.mean()), "median": float(np.median(finite)),
            "min": float(finite.min()), "max": float(finite.max())}


def summarise(dataset, resolved, selection, annotated) -> dict:
    """The selection summary `select --json` prints (and the app shows)."""
    from dataclasses import replace

    from core.export import params_to_json, run_selection
    from core.selection import overlap

    swapped = annotated.masks(dataset.pairs["pair_id"])[1]
    margins = {}
    for name, margin in resolved.margins.items():
        effective = np.where(swapped, -margin, margin)
        margins[name] = {"all": margin_stats(effective), "selected": margin_stats(effective[selection.indices])}
    overlaps = {}
    for mode in COMPARED_MODES:
        for source in (resolved.margins if mode == "top" else [None]):
            label = f"top:{source}" if source else mode
            if mode == selection.params.mode and source == selection.params.source:
                continue
            if mode in ("dm-add", "dm-mul") and len(resolved.margins) < 2:
                continue
            other = run_selection(dataset, resolved, replace(selection.params, mode=mode, source=source), annotated)
            shared = overlap(selection, other)
            overlaps[label] = {"count": shared.count, "jaccard": round(shared.jaccard, 4)}
    return {
        "params": params_to_json(selection.params),
        "counts": {"total": selection.total, "excluded": selection.excluded, "unscored": selection.unscored,
                   "eligible": selection.eligible, "candidates": selection.candidates,
                   "requested": selection.requested, "selected": selection.selected},
        "bounds": {name: {"m1": b.m1, "m2": b.m2, "m2_auto": b.m2_auto} for name, b in selection.bounds.items()},
        "trim_range": list(selection.trim_range) if selection.trim_range else None,
        "margins": margins,
        "overlap": overlaps,
        "notes": list(selection.notes),
    }


def run(args: argparse.Namespace) -> int:
    dataset, _, _, _, resolved, annotated, selection = selection_from_args(args)
    summary = summarise(dataset, resolved, selection, annotated)
    if args.json:
        print(json.dumps(summary))
    else:
        from core.margin_sources import MarginSpec

        print_summary(summary, [MarginSpec(name, tuple(p.get("columns", ()))).describe()
                                for name, p in resolved.provenance.items()])
    return 0


def print_summary(summary: dict, sources: list[str]) -> None:
    from rich.table import Table

    from dmtui.headless.common import report_console

    console = report_console()
    params, counts = summary["params"], summary["counts"]
    what = params["mode"] + (f" of {params['source']}" if params["mode"] in ("top", "mid", "bot") else "")
    console.print(f"[bold]{what}[/], budget {params['budget']} -> [bold green]{counts['selected']:,}[/] of "
                  f"{counts['total']:,} pairs  (eligible {counts['eligible']:,}, excluded {counts['excluded']:,}, "
                  f"unscored {counts['unscored']:,})")
    console.print("sources: " + "; ".join(sources), markup=False)  # column names are the data's
    for name, bound in summary["bounds"].items():
        console.print(f"  {name}: M1 = {bound['m1']:g}, M2 = {bound['m2']:g}{' (auto)' if bound['m2_auto'] else ''}")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("margin", "", "n", "mean", "median", "min", "max"):
        table.add_column(column, justify="left" if column in ("margin", "") else "right")
    for name, groups in summary["margins"].items():
        for group, stats in groups.items():
            cells = [f"{stats[k]:.3f}" if stats[k] is not None else "-" for k in ("mean", "median", "min", "max")]
            table.add_row(name if group == "all" else "", group, f"{stats['n']:,}", *cells)
    console.print(table)
    if summary["overlap"]:
        console.print("overlap with: " + ", ".join(
            f"{label} {o['count']:,} (J={o['jaccard']:.2f})" for label, o in summary["overlap"].items()))
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}")
