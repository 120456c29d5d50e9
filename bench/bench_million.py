"""The 1M-pair path end to end: import, reopen, the app, tuning, the table, export.

Generates a JSONL dataset of N pairs (default 1,000,000, about 390 MB) carrying two
margin columns, then measures, each phase in its own process so that its peak memory
is its own:

1. first import: read, validate, hash and cache the pairs (Arrow IPC files in the
   workspace cache), beside `pyarrow.json.read_json` of the same file alone (the floor:
   Arrow's reader, nothing checked or hashed), each in its own process;
2. reopen: the cache memory-mapped, no text read;
3. the app (Textual pilot, 160x50): process start to the first selection on screen,
   twice; then budget edits (keystroke to redrawn selection) beside `select` alone at
   the same size, and page-down / end / home in the examples table;
4. export of a 100k-pair subset with `dmtui export` (JSONL, as the input), then as
   Parquet.

    python bench/bench_million.py                 # 1M pairs, in a temp folder
    python bench/bench_million.py --pairs 200000 --work /tmp/m1 --keep   # reuse the data made before

Peak memory is each process's maximum resident set size (`ru_maxrss`). It counts the
pages of the memory-mapped cache that a phase read (an export of 100k random rows reads
most of them): those are the kernel's page cache, shared and dropped under pressure,
not memory the process allocated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MARGINS = ["external=sc,sr", "implicit=im"]
WORDS = ("the a rice cook python function garden water plant soil test value file read print loop error "
         "fix help tomato basil seed step answer question because then when why how list").split()


def write_dataset(path: Path, pairs: int) -> None:
    """Standard-format pairs of 20-word responses with per-response and implicit scores."""
    rng = np.random.default_rng(0)
    chosen_score, rejected_score, implicit = rng.normal(1, 2, pairs), rng.normal(0, 2, pairs), rng.normal(0, 3, pairs)
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, pairs, 50_000):
            count = min(50_000, pairs - start)
            words = np.array(WORDS)[rng.integers(0, len(WORDS), size=(count, 50))]
            lines = []
            for offset in range(count):
                i, row = start + offset, words[offset]
                lines.append(json.dumps({
                    "id": i, "prompt": f"question {i}: " + " ".join(row[:10]), "chosen": " ".join(row[10:30]),
                    "rejected": " ".join(row[30:50]), "sc": round(float(chosen_score[i]), 4),
                    "sr": round(float(rejected_score[i]), 4), "im": round(float(implicit[i]), 4)}))
            out.write("\n".join(lines) + "\n")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Phases, each run as `bench_million.py --phase NAME ...` in a fresh process --------------

def phase_load(data: Path, work: Path) -> dict:
    from core.workspace import Workspace

    started = time.perf_counter()
    dataset = Workspace.open_or_create(str(data), work / "ws").load()
    return {"seconds": time.perf_counter() - started, "pairs": dataset.pairs.num_rows, "peak_mb": peak_mb()}


def phase_read_json(data: Path) -> dict:
    import pyarrow.json as pa_json

    started = time.perf_counter()
    table = pa_json.read_json(data)
    return {"seconds": time.perf_counter() - started, "rows": table.num_rows, "peak_mb": peak_mb()}


async def _drive_app(work: Path, process_started: float, edits: int) -> dict:
    from core.workspace import Workspace
    from dmtui.app import DmtuiApp
    from dmtui.widgets.curation_pane import CurationPane
    from dmtui.widgets.examples_table import ExamplesTable

    app = DmtuiApp(Workspace.open(work / "ws"), margin_specs=MARGINS)
    async with app.run_test(size=(160, 50)) as pilot:
        while not app.screen.query(CurationPane) or app.screen.query_one(CurationPane).selection is None:
            await pilot.pause(0.01)
        opened = time.time() - process_started
        await pilot.press("2")
        await pilot.pause(0.2)
        pane = app.screen.query_one(CurationPane)
        budget = pane.query_one("#budget")
        refresh = []
        for edit in range(edits):
            previous = pane.selection
            started = time.perf_counter()
            budget.value = f"{5 + edit}%"
            while pane.selection is previous:
                await pilot.pause(0.001)
            await pilot.pause(0)  # the redraw it scheduled
            refresh.append(time.perf_counter() - started)
        table = pane.query_one(ExamplesTable)
        table.focus()
        await pilot.pause(0.1)
        scroll = []
        for key in ["pagedown"] * 5 + ["end", "home"]:
            started = time.perf_counter()
            await pilot.press(key)
            await pilot.pause(0)
            scroll.append(time.perf_counter() - started)
    return {"open_s": opened, "refresh_s": refresh, "scroll_s": scroll, "peak_mb": peak_mb()}


def phase_app(work: Path, process_started: float, edits: int) -> dict:
    return asyncio.run(_drive_app(work, process_started, edits))


def phase_select(pairs: int, repeats: int) -> dict:
    from core.selection import SelectionParams, select

    rng = np.random.default_rng(0)
    margins = {"external": rng.normal(1, 3, pairs), "implicit": rng.normal(0, 3, pairs)}
    keys = rng.integers(0, 2**63, pairs).astype(np.uint64)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        select(margins, SelectionParams(budget=0.1), tie_break=keys)
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times)}


def run_phase(name: str, args: argparse.Namespace, *extra: str) -> dict:
    command = [sys.executable, __file__, "--phase", name, "--pairs", str(args.pairs), "--work", str(args.work),
               "--edits", str(args.edits), "--process-started", repr(time.time()), *extra]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"phase {name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_export(args: argparse.Namespace, fmt: str) -> dict:
    out = args.work / f"export-{fmt}"
    command = [sys.executable, "-m", "dmtui", "export", str(args.work / "pairs.jsonl"), "--workspace",
               str(args.work / "ws"), *[part for spec in MARGINS for part in ("--margin", spec)],
               "--budget", "100000", "--out", str(out), "--format", fmt, "--force"]
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"export failed:\n{result.stderr[-3000:]}")
    return {"seconds": seconds, "peak_mb": int(result.stderr.strip().splitlines()[-1]) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--work", type=Path, help="folder for the data and workspace (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="reuse the data generated in --work before")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--process-started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        sys.path.insert(0, str(REPO))
        result = {"load": lambda: phase_load(args.work / "pairs.jsonl", args.work),
                  "read_json": lambda: phase_read_json(args.work / "pairs.jsonl"),
                  "app": lambda: phase_app(args.work, args.process_started, args.edits),
                  "select": lambda: phase_select(args.pairs, args.edits)}[args.phase]()
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as temp:
        args.work = (args.work or Path(temp)).resolve()
        args.work.mkdir(parents=True, exist_ok=True)
        data = args.work / "pairs.jsonl"
        if not (args.keep and data.exists()):
            started = time.perf_counter()
            write_dataset(data, args.pairs)
            print(f"generated {args.pairs:,} pairs ({data.stat().st_size / 2**20:,.0f} MiB JSONL) "
                  f"in {time.perf_counter() - started:.1f} s")
        shutil.rmtree(args.work / "ws", ignore_errors=True)  # the first import is measured every run
        report(args)


def report(args: argparse.Namespace) -> None:
    def ms(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1000:.0f} ms, worst {max(values) * 1000:.0f} ms"

    first = run_phase("load", args)
    arrow = run_phase("read_json", args)
    print(f"first import: {first['seconds']:.1f} s ({first['pairs'] / first['seconds']:,.0f} pairs/s), "
          f"peak {first['peak_mb']:,.0f} MiB; pyarrow.json.read_json of the same file {arrow['seconds']:.1f} s, "
          f"peak {arrow['peak_mb']:,.0f} MiB; import / read_json = {first['seconds'] / arrow['seconds']:.2f}x")
    reopen = run_phase("load", args)
    print(f"reopen (memory-mapped cache): {reopen['seconds']:.2f} s, peak {reopen['peak_mb']:,.0f} MiB "
          f"(first import / reopen = {first['seconds'] / reopen['seconds']:,.0f}x)")
    for label in ("app, first open after the import", "app, next open"):
        app = run_phase("app", args)
        print(f"{label}: process start to first selection {app['open_s']:.2f} s, peak {app['peak_mb']:,.0f} MiB")
    alone = run_phase("select", args)["median_s"]
    median = statistics.median(app["refresh_s"])
    print(f"  budget edit -> redrawn selection: {ms(app['refresh_s'])} ({args.edits} edits); "
          f"select alone {alone * 1000:.0f} ms; refresh / select = {median / alone:.1f}x")
    print(f"  examples table page-down / end / home: {ms(app['scroll_s'])}")
    for fmt in ("jsonl", "parquet"):
        export = run_export(args, fmt)
        print(f"export of a 100k subset ({fmt}): {export['seconds']:.1f} s including start-up, "
              f"peak {export['peak_mb']:,.0f} MiB")


if __name__ == "__main__":
    main()
