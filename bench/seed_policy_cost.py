"""What the seed policy of `dmtui score --demo` costs, side by side in one run (not run in CI).

On the bundled demo dataset (4,000 pairs) with the demo models and their scoring settings
(core.demo.models.DEMO_SCORING), times:

- before: the seed DPO of `dmtui score --demo` before cross-fitting, one pi_1 on D0 = 400
  random pairs for a fixed 2 epochs (26 optimiser steps in micro-batches of 4, cosine
  schedule), no held-out evaluation;
- demo: the seed policy of `dmtui score --demo` now (DEMO_SCORING: two cross-fit pi_1 of 400
  pairs, at most 2 epochs each, held-out accuracy on 200 pairs);
- default (``--default``, over an hour on 2 cores): the default seed policy with the demo's
  rate (DEMO_SEED_DPO), two pi_1 on whole folds trained to their held-out plateau;
- scoring: external and implicit margins of every pair with the last pi_1.

Prints the seconds and the ratio now / before, so a loaded machine still gives a usable
ratio (quote ranges over a few runs).

    .venv/bin/python bench/seed_policy_cost.py            # a few minutes on an idle 2-core CPU
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
    parser.add_argument("--default", action="store_true", help="also time the default seed policy (over an hour)")
    args = parser.parse_args(argv)

    import pyarrow as pa

    from core.demo.models import DEMO_SCORING, DEMO_SEED_DPO, DemoModelsConfig, ensure_demo_models
    from core.models.load import model_fingerprint
    from core.scoring.config import ScoringConfig, seed_config
    from core.scoring.run import score
    from core.scoring.seed_policy import ensure_seed_policy
    from core.store.workspace import Workspace
    from core.training.trainer import TrainConfig, train

    models = ensure_demo_models(DemoModelsConfig())
    work = Path(tempfile.mkdtemp(prefix="dmtui-seed-cost-"))
    workspace = Workspace.open_or_create(str(REPO_ROOT / "sample_data" / "demo" / "pairs.jsonl"), work / "ws")
    dataset = workspace.load()
    settings = {"demo": DEMO_SCORING, **({"default": DEMO_SEED_DPO} if args.default else {})}
    configs = {name: seed_config(ScoringConfig(sources=("external", "implicit"), reward_model=str(models.reward),
                                               reference_model=str(models.policy), device="cpu", **chosen))
               for name, chosen in settings.items()}

    started = time.monotonic()
    picked = np.sort(np.random.default_rng(0).choice(dataset.pairs.num_rows, 400, replace=False))
    before = TrainConfig(model=str(models.policy), lr=DEMO_SEED_DPO["seed_lr"], epochs=2.0, batch_size=32,
                         max_length=configs["demo"].max_length, save_steps=10**9)
    steps_before = train(before, dataset.pairs.take(pa.array(picked)), work / "before",
                         metrics_sink=lambda record: None).steps
    seconds_before = time.monotonic() - started
    print("| seed policy on the demo (4,000 pairs) | D0 | optimiser steps | held-out accuracy | seconds | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| before: one pi_1, 2 epochs, micro-batches of 4 | 400 | {steps_before} | | {seconds_before:.0f} | 1.00 |")
    for name, config in configs.items():
        started = time.monotonic()
        _, info = ensure_seed_policy(dataset, workspace, config, model_fingerprint(config.reference_model))
        seconds = time.monotonic() - started
        folds = info["folds"]
        pairs = " + ".join(str(fold["train_pairs"]) for fold in folds)
        steps = " + ".join(str(fold["steps"]) for fold in folds)
        accuracy = " / ".join(f"{fold['held_out_accuracy']:.3f}" for fold in folds)
        print(f"| {name}: two cross-fit pi_1 | {pairs} | {steps} | {accuracy} | {seconds:.0f} "
              f"| {seconds / seconds_before:.2f} |", flush=True)
    started = time.monotonic()
    score(dataset, workspace, config)
    seconds_scoring = time.monotonic() - started
    print(f"| scoring external + implicit, 4,000 pairs | | | | {seconds_scoring:.0f} | "
          f"{seconds_scoring / seconds_before:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
