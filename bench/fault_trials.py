"""Kill -9 trials for the README's Reliability table.

For every kind of tests/faults.py: an uninterrupted reference run, then TRIALS trials, each
killing the command up to KILLS times at seeded random moments and rerunning it until it
finishes, with every check after every kill and at the end. Prints one Markdown row per
kind and a JSON line per trial on stderr (``--json FILE`` keeps them).

    .venv/bin/python bench/fault_trials.py --trials 20 --kills 2
    .venv/bin/python bench/fault_trials.py --kinds export,annotations --trials 5

The same trials run as ``pytest -m slow tests/test_faults.py`` (seeds 100-119).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from faults import (  # noqa: E402 - after the path to tests/
    AnnotationScenario,
    ExportScenario,
    ScoreStoreScenario,
    ScoringScenario,
    TrainingScenario,
    run_trial,
)

KINDS = {
    "scoring": "`dmtui score` (external + implicit, 20 pairs, a checkpoint every 2)",
    "score_checkpoints": "`ScoreStore.append` of 20,000-row parts in a loop",
    "export": "`dmtui export --force` over an older export (20,000 pairs, 50%)",
    "annotations": "`AnnotationStore.update` in a loop (2,000 updates)",
    "training": "`dmtui train`, a checkpoint every step, rerun with `--resume`",
}


def scenario(kind: str, work: Path, models):
    if kind == "scoring":
        return ScoringScenario(work, models)
    if kind == "score_checkpoints":
        return ScoreStoreScenario(work)
    if kind == "export":
        return ExportScenario(work)
    if kind == "annotations":
        return AnnotationScenario(work, updates=2000)
    return TrainingScenario(work, models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of: {', '.join(KINDS)}")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kills", type=int, default=2, help="kills per trial before the command may finish")
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--work", help="folder for the trials (default: a temporary one)")
    parser.add_argument("--json", help="write every trial as a JSON line to this file")
    args = parser.parse_args()

    from core.demo.models import DemoModelsConfig, ensure_demo_models

    cache = os.environ.get("DMTUI_CACHE") or str(REPO_ROOT / ".cache" / "dmtui")
    models = ensure_demo_models(DemoModelsConfig(cache_dir=cache))
    work = Path(args.work or tempfile.mkdtemp(prefix="dmtui-faults-"))
    records = []
    print("| kind of fault | trials | kills that landed | of them mid-write | lost | seconds |")
    print("|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        started = time.monotonic()
        trials_of_kind = scenario(kind, work / kind, models)
        trials_of_kind.measure(runs=2)
        trials = []
        for seed in range(args.first_seed, args.first_seed + args.trials):
            trial = run_trial(trials_of_kind, seed, args.kills)
            trials.append(trial)
            records.append(asdict(trial))
            print(json.dumps(asdict(trial)), file=sys.stderr, flush=True)
        lost = sum(len(t.lost) for t in trials)
        print(f"| {KINDS[kind]} | {len(trials)} | {sum(t.kills for t in trials)} | "
              f"{sum(t.mid_write for t in trials)} | {lost or 'nothing'} | {time.monotonic() - started:.0f} |",
              flush=True)
    if args.json:
        Path(args.json).write_text("".join(json.dumps(r) + "\n" for r in records))


if __name__ == "__main__":
    main()
