"""How long the Curate tab takes from a keystroke to a redrawn selection, at N pairs.

Drives the real app headless (Textual's pilot): types budgets into the budget field and
times each edit until the new selection is on screen (counts, plots, table). Prints the
median and worst refresh beside `select` alone, measured in the same run.

    python bench/bench_app_refresh.py [--pairs 100000] [--edits 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.selection import SelectionParams, select  # noqa: E402
from core.workspace import Workspace  # noqa: E402
from dmtui.app import DmtuiApp  # noqa: E402
from dmtui.widgets.curation_pane import CurationPane  # noqa: E402


def write_dataset(folder: Path, pairs: int) -> Path:
    rng = np.random.default_rng(0)
    chosen, rejected, implicit = rng.integers(1, 10, pairs), rng.integers(1, 10, pairs), rng.normal(0, 3, pairs)
    path = folder / "data.jsonl"
    with path.open("w") as out:
        for i in range(pairs):
            out.write(json.dumps({"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"bad {i}",
                                  "sc": int(chosen[i]), "sr": int(rejected[i]), "im": float(implicit[i])}) + "\n")
    return path


async def measure(workspace: Workspace, edits: int) -> tuple[list[float], float]:
    app = DmtuiApp(workspace, margin_specs=["external=sc,sr", "implicit=im"])
    async with app.run_test(size=(160, 50)) as pilot:
        start = time.perf_counter()
        while not app.screen.query(CurationPane) or app.screen.query_one(CurationPane).selection is None:
            await pilot.pause(0.05)
        opened = time.perf_counter() - start
        await pilot.press("2")
        pane = app.screen.query_one(CurationPane)
        budget = pane.query_one("#budget")
        times = []
        for edit in range(edits):
            previous = pane.selection
            started = time.perf_counter()
            budget.value = f"{5 + edit}%"
            while pane.selection is previous:
                await pilot.pause(0.001)
            await pilot.pause(0)  # let the redraw it scheduled happen
            times.append(time.perf_counter() - started)
        return times, opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--edits", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = write_dataset(Path(folder), args.pairs)
        workspace = Workspace.open_or_create(str(data), Path(folder) / "ws")
        workspace.load()  # cache the load, as a reopened workspace has it
        times, opened = asyncio.run(measure(workspace, args.edits))
        margins = {"external": np.random.default_rng(0).normal(0, 3, args.pairs),
                   "implicit": np.random.default_rng(1).normal(0, 3, args.pairs)}
        started = time.perf_counter()
        for _ in range(args.edits):
            select(margins, SelectionParams(budget=0.1))
        select_alone = (time.perf_counter() - started) / args.edits
    median, worst = statistics.median(times), max(times)
    print(f"{args.pairs:,} pairs: app open to first selection {opened:.2f} s")
    print(f"  keystroke -> redrawn selection: median {median * 1000:.1f} ms, worst {worst * 1000:.1f} ms "
          f"({args.edits} edits)")
    print(f"  select alone: {select_alone * 1000:.1f} ms; refresh / select = {median / select_alone:.1f}x")


if __name__ == "__main__":
    main()
