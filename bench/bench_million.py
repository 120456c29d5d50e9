"""The 1M-pair path end to end: import, reopen, the app, tuning, the table, export.

Generates a JSONL dataset of N pairs (default 1,000,000, about 390 MB) carrying two
margin columns, then measures, each phase in its own process so that its peak memory
is its own:

1. first import: read, validate, hash and cache the pairs (Arrow IPC files in the
   workspace cache), beside `pyarrow.json.read_json` of the same file alone (the floor:
   Arrow's reader, nothing checked or hashed), each in its own process;
2. reopen: the cache memory-mapped, no text read;
3. the app (Textual pilot, 160x50): process start to the first selection painted on the
   Curate tab, twice; then budget edits (an edit to the plots and the table painted with
   the new selection) beside `select` alone on the same data, and page-down / end / home
   in the examples table (a key to the table painted);
4. export of a 100k-pair subset with `dmtui export` (JSONL, as the input), then as
   Parquet.

    python bench/bench_million.py                 # 1M pairs, in a temp folder
    python bench/bench_million.py --pairs 200000 --work /tmp/m1 --keep   # reuse the data made before
    python bench/bench_million.py --work /tmp/m1 --keep --app-only       # only the app phases, again
    python bench/bench_million.py --work /tmp/m1 --keep --app-only --baseline /tmp/old   # and an older checkout's
    python bench/bench_million.py --work /tmp/m1 --keep --import-only --baseline /tmp/old   # phase 1 only

`--baseline CHECKOUT` runs the app phases (with `--import-only`, the first import) a
second time with the code of another checkout (e.g. `git archive COMMIT | tar -x -C
/tmp/old`) right after this one's, on the same data (in a workspace of its own,
`ws-baseline`, as cache formats differ between versions), so a change is measured
against what it replaced under the same load.

Peak memory is each process's maximum resident set size (`ru_maxrss`). It counts the
pages of the memory-mapped cache that a phase read (an export of 100k random rows reads
most of them): those are the kernel's page cache, shared and dropped under pressure,
not memory the process allocated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MARGINS = ["external=sc,sr", "implicit=im"]
PAGE_DOWNS = 8
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


def cpu_seconds() -> float:
    """This process's CPU time so far, all threads, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# Phases, each run as `bench_million.py --phase NAME ...` in a fresh process --------------

def phase_load(data: Path, ws: Path) -> dict:
    from core.store.workspace import Workspace

    started, cpu = time.perf_counter(), cpu_seconds()
    dataset = Workspace.open_or_create(str(data), ws).load()
    return {"seconds": time.perf_counter() - started, "cpu": cpu_seconds() - cpu, "pairs": dataset.pairs.num_rows,
            "peak_mb": peak_mb()}


def phase_read_json(data: Path) -> dict:
    import pyarrow.json as pa_json

    started, cpu = time.perf_counter(), cpu_seconds()
    table = pa_json.read_json(data)
    return {"seconds": time.perf_counter() - started, "cpu": cpu_seconds() - cpu, "rows": table.num_rows,
            "peak_mb": peak_mb()}


@dataclass(frozen=True)
class Stamp:
    """A moment: wall time and the process's CPU time (all threads)."""

    wall: float
    cpu: float

    @classmethod
    def now(cls) -> "Stamp":
        return cls(time.perf_counter(), time.process_time())

    def since(self, start: "Stamp") -> tuple[float, float]:
        return self.wall - start.wall, self.cpu - start.cpu


class PaintClock:
    """When the new state reached the widgets, and when they were next painted.

    Wraps `MarginPlots.show`, `ExamplesTable.show` and `._move_to` (the state arrives) and the
    widgets' render methods (a paint). A figure "to redrawn" ends at the first paint
    after the state arrived, not when a pilot call returns (the pilot waits on every
    widget's queue, which costs more than the redraw itself). Each moment is kept as wall
    time and as the process's CPU time (every thread): on a busy box the wall time counts
    the waits for a core, the CPU time only the work.
    """

    def __init__(self) -> None:
        from dmtui.widgets.examples_table import ExamplesTable
        from dmtui.widgets.margin_plots import MarginPlots

        self.last = {name: Stamp(0.0, 0.0) for name in ("table", "plots", "selection", "rows", "cursor")}
        self._changed = asyncio.Event()
        self._wrap(ExamplesTable, "render_line", "table", before=True)
        self._wrap(MarginPlots, "render", "plots", before=True)
        self._wrap(MarginPlots, "show", "selection", before=False)
        self._wrap(ExamplesTable, "show", "rows", before=False)
        self._wrap(ExamplesTable, "_move_to", "cursor", before=False)

    def _wrap(self, cls, method: str, name: str, before: bool) -> None:
        original = getattr(cls, method)

        def timed(widget, *args, **kwargs):  # called on the event loop, like the waits below
            if before:
                self._stamp(name)
            result = original(widget, *args, **kwargs)
            if not before:
                self._stamp(name)
            return result

        setattr(cls, method, timed)

    def _stamp(self, name: str) -> None:
        self.last[name] = Stamp.now()
        self._changed.set()

    async def wait(self, event: str, after: Stamp, timeout: float = 60.0) -> Stamp:
        """The moment `event` happened after `after`."""
        while self.last[event].wall <= after.wall:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), timeout)
        return self.last[event]

    async def painted(self, event: str, after: Stamp, *widgets: str) -> Stamp:
        """The moment `widgets` were all painted after `event` happened (after `after`)."""
        arrived = await self.wait(event, after)
        return max([await self.wait(widget, arrived) for widget in widgets], key=lambda stamp: stamp.wall)


async def _drive_app(ws: Path, process_started: float, edits: int) -> dict:
    from textual import events
    from textual.widgets import TabbedContent

    from core.store.workspace import Workspace
    from dmtui.app import DmtuiApp
    from dmtui.widgets.curation_pane import CurationPane
    from dmtui.widgets.examples_table import ExamplesTable

    clock = PaintClock()
    app = DmtuiApp(Workspace.open(ws), margin_specs=MARGINS)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("2")  # on the Curate tab, the first selection is painted when it arrives
        arrived = await clock.wait("selection", Stamp(0.0, 0.0))
        tabs = app.screen.query_one(TabbedContent)
        if tabs.active != "curate":  # "2" came before the tabs were shown
            tabs.active = "curate"
        await clock.wait("plots", arrived)
        await clock.wait("table", await clock.wait("rows", Stamp(0.0, 0.0)))  # the first rows, in order
        opened, opened_cpu = time.time() - process_started, time.process_time()
        await pilot.pause(0.3)
        pane = app.screen.query_one(CurationPane)
        budget = pane.query_one("#budget")
        refresh = []
        remembered = budget.value  # setting the value a field holds changes nothing: skip it
        for value in [f"{percent}%" for percent in range(5, 6 + edits) if f"{percent}%" != remembered][:edits]:
            started = Stamp.now()
            budget.value = value
            refresh.append((await clock.painted("selection", started, "plots", "table")).since(started))
            await pilot.pause(0.05)
        table = pane.query_one(ExamplesTable)
        table.focus()
        await pilot.pause(0.1)
        scroll = []
        for key in ["pagedown"] * PAGE_DOWNS + ["end", "home"]:
            started = Stamp.now()
            app.post_message(events.Key(key, None))
            scroll.append((await clock.painted("cursor", started, "table")).since(started))
            await pilot.pause(0.05)
    return {"open_s": opened, "open_cpu_s": opened_cpu, "refresh_s": [wall for wall, _ in refresh],
            "refresh_cpu_s": [cpu for _, cpu in refresh], "scroll_s": [wall for wall, _ in scroll],
            "scroll_cpu_s": [cpu for _, cpu in scroll], "peak_mb": peak_mb()}


def phase_app(ws: Path, process_started: float, edits: int) -> dict:
    return asyncio.run(_drive_app(ws, process_started, edits))


def phase_select(ws: Path, edits: int) -> dict:
    """`select` alone on the same workspace, margins and budgets as the app's edits."""
    from core.selection.selector import SelectionParams, select, tie_keys_from_pair_ids
    from core.store.margin_sources import MarginSpec, resolve_margins
    from core.store.workspace import Workspace

    workspace = Workspace.open(ws)
    dataset = workspace.load()
    margins = resolve_margins(dataset, [MarginSpec.parse(spec) for spec in MARGINS], workspace).margins
    keys = tie_keys_from_pair_ids(dataset.pairs["pair_id"])
    times = []
    for edit in range(edits):
        started = Stamp.now()
        select(margins, SelectionParams(budget=(5 + edit) / 100, sources=tuple(margins)), tie_break=keys)
        times.append(Stamp.now().since(started))
    return {"median_s": statistics.median(wall for wall, _ in times),
            "median_cpu_s": statistics.median(cpu for _, cpu in times)}


def workspace_of(work: Path, code: Path) -> Path:
    """This checkout's workspace, or a baseline's own: cache formats differ between versions
    and a load rebuilds a cache it cannot read, so the two never share one."""
    return work / ("ws" if code.resolve() == REPO else "ws-baseline")


def run_phase(name: str, args: argparse.Namespace, code: Path = REPO) -> dict:
    """Run one phase in a fresh process, importing dmtui from the checkout `code`."""
    command = [sys.executable, __file__, "--phase", name, "--pairs", str(args.pairs), "--work", str(args.work),
               "--edits", str(args.edits), "--code", str(code), "--process-started", repr(time.time())]
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
    parser.add_argument("--app-only", action="store_true",
                        help="with --keep: only the app phases, on the workspace an earlier run left")
    parser.add_argument("--import-only", action="store_true",
                        help="only the first import beside read_json (the figures the import's speed is judged by)")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also run the app phases with this checkout's code, side by side")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, default=REPO, help=argparse.SUPPRESS)
    parser.add_argument("--process-started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        sys.path.insert(0, str(args.code))
        ws = workspace_of(args.work, args.code)
        result = {"load": lambda: phase_load(args.work / "pairs.jsonl", ws),
                  "read_json": lambda: phase_read_json(args.work / "pairs.jsonl"),
                  "app": lambda: phase_app(ws, args.process_started, args.edits),
                  "select": lambda: phase_select(ws, args.edits)}[args.phase]()
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
        if args.app_only and (args.work / "ws").exists():
            report_app(args)
            return
        shutil.rmtree(args.work / "ws", ignore_errors=True)  # the first import is measured every run
        report(args)


def report(args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    first = run_phase("load", args)
    arrow = run_phase("read_json", args)
    print(f"first import: {first['seconds']:.1f} s ({first['pairs'] / first['seconds']:,.0f} pairs/s, "
          f"CPU {first['cpu']:.1f} s), peak {first['peak_mb']:,.0f} MiB; pyarrow.json.read_json of the same file "
          f"{arrow['seconds']:.1f} s (CPU {arrow['cpu']:.1f} s), peak {arrow['peak_mb']:,.0f} MiB; "
          f"import / read_json = {first['seconds'] / arrow['seconds']:.2f}x "
          f"(load average {load:.1f} -> {os.getloadavg()[0]:.1f})")
    if args.import_only:
        if args.baseline:
            shutil.rmtree(workspace_of(args.work, args.baseline), ignore_errors=True)
            old = run_phase("load", args, code=args.baseline)
            print(f"baseline {args.baseline}, same file, right after: first import {old['seconds']:.1f} s "
                  f"(CPU {old['cpu']:.1f} s), peak {old['peak_mb']:,.0f} MiB; baseline / read_json = "
                  f"{old['seconds'] / arrow['seconds']:.2f}x; this / baseline = "
                  f"{first['seconds'] / old['seconds']:.2f}x wall, {first['cpu'] / old['cpu']:.2f}x CPU")
        return
    reopen = run_phase("load", args)
    print(f"reopen (memory-mapped cache): {reopen['seconds']:.2f} s, peak {reopen['peak_mb']:,.0f} MiB "
          f"(first import / reopen = {first['seconds'] / reopen['seconds']:,.0f}x)")
    report_app(args, labels=("app, first open after the import", "app, next open"))
    for fmt in ("jsonl", "parquet"):
        export = run_export(args, fmt)
        print(f"export of a 100k subset ({fmt}): {export['seconds']:.1f} s including start-up, "
              f"peak {export['peak_mb']:,.0f} MiB")


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.0f} ms, worst {max(values) * 1000:.0f} ms"


def ratio(a: list[float] | float, b: list[float] | float) -> float:
    median = statistics.median
    return (median(a) if isinstance(a, list) else a) / (median(b) if isinstance(b, list) else b)


def report_app(args: argparse.Namespace, labels: tuple[str, ...] = ("app",)) -> None:
    """The app's figures, wall time with CPU time beside it (a busy box stretches the wall
    time; the CPU time is the work), and the same for a `--baseline` checkout."""
    run_phase("load", args)  # a cache an older version left is rebuilt here, not timed as the app's start
    if args.baseline:
        run_phase("load", args, code=args.baseline)
    loads = [os.getloadavg()[0]]
    for label in labels:
        app = run_phase("app", args)
        print(f"{label}: process start to first selection painted {app['open_s']:.2f} s, CPU {app['open_cpu_s']:.2f} s "
              f"(target <= 2 s), peak {app['peak_mb']:,.0f} MiB")
    baseline = run_phase("app", args, code=args.baseline) if args.baseline else None
    alone = run_phase("select", args)
    loads.append(os.getloadavg()[0])
    print(f"  budget edit -> redrawn selection (plots and table painted), {args.edits} edits: "
          f"wall {ms(app['refresh_s'])}, CPU {ms(app['refresh_cpu_s'])}; `select` alone on the same data: "
          f"wall {alone['median_s'] * 1000:.0f} ms, CPU {alone['median_cpu_s'] * 1000:.0f} ms; refresh / select = "
          f"{ratio(app['refresh_s'], alone['median_s']):.1f}x wall, {ratio(app['refresh_cpu_s'], alone['median_cpu_s']):.1f}x CPU "
          f"(targets: median <= 100 ms, <= 3x)")
    page_down = slice(0, PAGE_DOWNS)
    print(f"  examples table, key to repainted table: page-down wall {ms(app['scroll_s'][page_down])}, "
          f"CPU {ms(app['scroll_cpu_s'][page_down])} (target <= 50 ms); end / home wall {ms(app['scroll_s'][PAGE_DOWNS:])}")
    if baseline is not None:
        print(f"baseline {args.baseline}, same data, right after: start to first selection {baseline['open_s']:.2f} s "
              f"(CPU {baseline['open_cpu_s']:.2f} s); budget edit wall {ms(baseline['refresh_s'])}, "
              f"CPU {ms(baseline['refresh_cpu_s'])}; page-down wall {ms(baseline['scroll_s'][page_down])}, "
              f"CPU {ms(baseline['scroll_cpu_s'][page_down])}")
        print("  this checkout / baseline (wall, CPU): "
              f"start {ratio(app['open_s'], baseline['open_s']):.2f}x, {ratio(app['open_cpu_s'], baseline['open_cpu_s']):.2f}x; "
              f"budget edit {ratio(app['refresh_s'], baseline['refresh_s']):.2f}x, "
              f"{ratio(app['refresh_cpu_s'], baseline['refresh_cpu_s']):.2f}x; "
              f"page-down {ratio(app['scroll_s'][page_down], baseline['scroll_s'][page_down]):.2f}x, "
              f"{ratio(app['scroll_cpu_s'][page_down], baseline['scroll_cpu_s'][page_down]):.2f}x")
    print(f"  load while measuring: {min(loads):.1f}-{max(loads):.1f} (1-minute average; the box has "
          f"{os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
