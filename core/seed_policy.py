"""The seed policy pi_1 of implicit margins: pi_0 after DPO on a seed set D0.

Without a policy model, implicit margins need pi_1; it is made here once per workspace
and settings into ``WORKSPACE/models/seed-pi1-<fp>/`` (core.training does the DPO), and
core.scoring scores with it.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.loading import LoadedDataset
from core.models import model_fingerprint
from core.progress import ProgressFn
from core.scoring import ScoringConfig, _digest
from core.workspace import Workspace, abandoned_temps, atomic_write_json, owner_tag, writing


def seed_set_size(n_pairs: int, config: ScoringConfig) -> int:
    """|D0|: `seed_pairs`, or on a small dataset `seed_fraction` of it, at least `seed_min_pairs`.

    >>> [seed_set_size(n, ScoringConfig()) for n in (50, 200, 4000, 60000)]
    [50, 64, 400, 2000]
    """
    share = max(config.seed_min_pairs, math.ceil(config.seed_fraction * n_pairs))
    return min(config.seed_pairs, share, n_pairs)



def _seed_settings(config: ScoringConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in (
        "seed_pairs", "seed_fraction", "seed_min_pairs", "seed_epochs", "seed_steps", "seed_lr", "seed_beta",
        "seed_batch_size", "seed", "max_length", "trust_remote_code", "allow_pickle")}


def seed_policy_dir(workspace: Workspace, config: ScoringConfig, reference_fingerprint: str) -> Path:
    """Where pi_1 of these seed settings lives once made: named by pi_0 and the settings."""
    name = f"seed-pi1-{_digest({'reference': reference_fingerprint, **_seed_settings(config)})}"
    return workspace.root / "models" / name


def prepare_seed_policy(
    dataset: LoadedDataset,
    workspace: Workspace,
    config: ScoringConfig,
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any] | None:
    """pi_1 trained (or found) ahead of `score` when implicit margins need a seed policy, else None.

    A sharded run's rank 0 calls this before the other ranks start scoring (core.distributed).
    """
    if "implicit" not in config.sources or config.policy_model is not None:
        return None
    config.validate()
    assert config.reference_model is not None, "validate: implicit margins need pi_0"
    _, info = ensure_seed_policy(dataset, workspace, config, model_fingerprint(config.reference_model),
                                 progress=progress, cancel=cancel)
    return info


def ensure_seed_policy(
    dataset: LoadedDataset,
    workspace: Workspace,
    config: ScoringConfig,
    reference_fingerprint: str,
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Path, dict[str, Any]]:
    """pi_1 for implicit margins: reused from ``WORKSPACE/models/seed-pi1-<fp>/`` or trained now.

    The folder is named by pi_0's fingerprint and the seed settings, not by the data, so
    once made it serves later runs on the same workspace, rows appended included (their
    implicit margins stay comparable with the rest). ``seed.json`` in it records D0.
    """
    from core.training import TrainConfig, train_seed_policy

    target = seed_policy_dir(workspace, config, reference_fingerprint)
    models_dir, name = target.parent, target.name
    if (target / "seed.json").is_file():
        info = json.loads((target / "seed.json").read_text("utf-8"))
        return target, {"path": str(target), "trained_now": False, "seed_pairs": len(info["pair_ids"])}
    size = seed_set_size(dataset.pairs.num_rows, config)
    picked = np.sort(np.random.default_rng(config.seed).choice(dataset.pairs.num_rows, size, replace=False))
    seed_rows = dataset.pairs.take(pa.array(picked))
    train_config = TrainConfig(
        lr=config.seed_lr, epochs=config.seed_epochs, max_steps=config.seed_steps, beta=config.seed_beta,
        batch_size=config.seed_batch_size, max_length=config.max_length, seed=config.seed,
        save_steps=10**9, save_total_limit=1, trust_remote_code=config.trust_remote_code,
        allow_pickle=config.allow_pickle,
    )
    prefix = f".{name}.building-"
    with writing(models_dir):
        models_dir.mkdir(parents=True, exist_ok=True)
        for abandoned in abandoned_temps(models_dir, prefix):  # a training killed earlier
            shutil.rmtree(abandoned, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=models_dir))
    started = time.monotonic()
    assert config.reference_model is not None, "ScoringConfig.validate: implicit margins need pi_0"
    try:
        final = train_seed_policy(config.reference_model, seed_rows, building / "run", train_config,
                                  progress=progress, cancel=cancel)
        with writing(models_dir):
            atomic_write_json(final / "seed.json", {
                "reference_model": config.reference_model, "reference_fingerprint": reference_fingerprint,
                "settings": _seed_settings(config), "pair_ids": seed_rows["pair_id"].to_pylist(),
                "train_seconds": round(time.monotonic() - started, 2)})
            final.rename(target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target, {"path": str(target), "trained_now": True, "seed_pairs": size,
                    "train_seconds": round(time.monotonic() - started, 2)}
