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
    describe_settings,
    session_from_args,
    settings_line,
)

COMPARED_MODES = ("random", "top", "dm-add", "dm-mul")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "select",
        help="summarise a selection: counts, margins, M1/M2, overlap with other strategies",
        description="Run a selection over a dataset's margins and print what it keeps and which settings it used. "
        "Nothing is written, except that --workspace on a new folder makes the workspace.",
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


def summarise(session, parsed, origins, selection) -> dict:
    """The selection summary `select --json` prints."""
    from dataclasses import replace

    from core.curation.session import mode_requirement
    from core.export.exporter import params_to_json
    from core.selection.selector import overlap

    margins = {}
    for name in session.sources:
        effective = session.effective_margin(name)
        margins[name] = {"all": margin_stats(effective), "selected": margin_stats(effective[selection.indices])}
    overlaps = {}
    for mode in COMPARED_MODES:
        for source in (session.sources if mode == "top" else [None]):
            label = f"top:{source}" if source else mode
            if mode == selection.params.mode and source == selection.params.source:
                continue
            if mode in ("dm-add", "dm-mul") and (len(session.sources) < 2 or mode_requirement(mode, session.sources)):
                continue
            sources = selection.params.sources or tuple(s for s in session.sources if s != "ifd")
            other = session.select(replace(selection.params, mode=mode, source=source, sources=sources))
            shared = overlap(selection, other)
            overlaps[label] = {"count": shared.count, "jaccard": round(shared.jaccard, 4)}
    plan = session.plan_export(selection, parsed.drop_flagged)
    return {
        "params": params_to_json(selection.params),
        "settings": describe_settings(parsed, origins),
        "sources": {name: provenance for name, provenance in session.resolved.provenance.items()},
        "counts": {"total": selection.total, "excluded": selection.excluded, "unscored": selection.unscored,
                   "eligible": selection.eligible, "candidates": selection.candidates,
                   "requested": selection.requested, "selected": selection.selected,
                   "trimmed": int(selection.trimmed.sum()) if selection.trimmed is not None else 0},
        "bounds": {name: {"m1": b.m1, "m2": b.m2, "m2_auto": b.m2_auto} for name, b in selection.bounds.items()},
        "trim_range": list(selection.trim_range) if selection.trim_range else None,
        "margins": margins,
        "overlap": overlaps,
        "flagged_selected": session.flag_counts(selection.indices),
        "export": {"drop_flagged": list(plan.drop_flagged), "dropped": plan.dropped, "spared": plan.spared,
                   "written": plan.written},
        "notes": list(parsed.notes) + list(selection.notes),
    }


def run(args: argparse.Namespace) -> int:
    session, parsed, origins = session_from_args(args)
    selection = session.select(parsed.params)
    summary = summarise(session, parsed, origins, selection)
    if args.json:
        print(json.dumps(summary))
    else:
        from core.store.margin_sources import MarginSpec

        print_summary(summary, [MarginSpec(name, tuple(p.get("columns", ()))).describe()
                                for name, p in session.resolved.provenance.items()])
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
    console.print(settings_line(summary["settings"]), markup=False, soft_wrap=True)
    console.print("sources: " + ("; ".join(sources) or "none"), markup=False)  # column names are the data's
    for name, bound in summary["bounds"].items():
        console.print(f"  {name}: M1 = {bound['m1']:g}, M2 = {bound['m2']:g}{' (auto)' if bound['m2_auto'] else ''}")
    if summary["trim_range"] is not None:
        low, high = summary["trim_range"]
        console.print(f"  trim {params['trim'] * 100:g}% at each end: {counts['trimmed']:,} pairs outside "
                      f"[{low:.4g}, {high:.4g}] cannot be picked (--trim 0 keeps them)")
    if summary["margins"]:
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
    flagged = {flag: n for flag, n in summary["flagged_selected"].items() if n}
    if flagged:
        drop = ", ".join(summary["export"]["drop_flagged"]) or "none"
        console.print("[yellow]warning:[/] selected pairs carry flags: "
                      + ", ".join(f"{flag} {n}" for flag, n in flagged.items())
                      + f"; an export drops those flagged {drop}"
                      + (f" (but keeps the swapped mislabeled ones: {summary['export']['spared']:,})"
                         if summary["export"]["spared"] else "")
                      + f" and writes {summary['export']['written']:,} pairs")
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}")
