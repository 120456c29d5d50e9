"""What the seed policy of `dmtui score --demo` costs, side by side in one run (not run in CI).

On the bundled demo dataset (4,000 pairs) with the demo models and their scoring settings
(core.demo.models.DEMO_SCORING), times:

- before: the earlier seed DPO, one pi_1 on D0 = 400 random pairs for a fixed 2 epochs
  (26 optimiser steps, cosine schedule), no held-out evaluation;
- now: the default seed policy, two cross-fit pi_1 trained to their held-out plateau;
- scoring: external and implicit margins of every pair with the pi_1 of "now".

Prints the seconds and the ratio now / before, so a loaded machine still gives a usable
ratio (quote ranges over a few runs).

    .venv/bin/python bench/seed_policy_cost.py            # about 5-10 minutes on an idle 2-core CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)

    import pyarrow as pa

    from core.demo.models import DEMO_SCORING, DemoModelsConfig, ensure_demo_models
    from core.models import model_fingerprint
    from core.scoring import ScoringConfig, score
    from core.seed_policy import ensure_seed_policy
    from core.training import TrainConfig, train
    from core.workspace import Workspace

    models = ensure_demo_models(DemoModelsConfig())
    work = Path(tempfile.mkdtemp(prefix="dmtui-seed-cost-"))
    workspace = Workspace.open_or_create(str(REPO_ROOT / "sample_data" / "demo" / "pairs.jsonl"), work / "ws")
    dataset = workspace.load()
    config = ScoringConfig(sources=("external", "implicit"), reward_model=str(models.reward),
                           reference_model=str(models.policy), device="cpu", **DEMO_SCORING)

    started = time.monotonic()
    picked = np.sort(np.random.default_rng(0).choice(dataset.pairs.num_rows, 400, replace=False))
    before = TrainConfig(model=str(models.policy), lr=DEMO_SCORING["seed_lr"], epochs=2.0, batch_size=32,
                         per_device_batch_size=DEMO_SCORING["seed_per_device_batch_size"], save_steps=10**9)
    steps_before = train(before, dataset.pairs.take(pa.array(picked)), work / "before",
                         metrics_sink=lambda record: None).steps
    seconds_before = time.monotonic() - started

    started = time.monotonic()
    _, info = ensure_seed_policy(dataset, workspace, config, model_fingerprint(config.reference_model))
    seconds_now = time.monotonic() - started

    started = time.monotonic()
    score(dataset, workspace, config)
    seconds_scoring = time.monotonic() - started

    steps_now = " + ".join(str(fold["steps"]) for fold in info["folds"])
    print("| seed policy of `dmtui score --demo` (4,000 pairs) | optimiser steps | seconds | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| before: one pi_1, 400 pairs, 2 epochs | {steps_before} | {seconds_before:.0f} | 1.00 |")
    print(f"| now: two cross-fit pi_1 to the plateau ({info['seed_pairs']:,} pairs) | {steps_now} "
          f"| {seconds_now:.0f} | {seconds_now / seconds_before:.1f} |")
    print(f"| scoring external + implicit, 4,000 pairs | | {seconds_scoring:.0f} | "
          f"{seconds_scoring / seconds_before:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
