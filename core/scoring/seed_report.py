"""What the Score report says about the seed policy pi_1 and the implicit margins it gives.

Plain functions over numbers and the report's dicts (no models, no torch), so the app's
Score tab and the CLI share them without importing the engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.selection.stats import spearman


def implicit_external_spearman(implicit: np.ndarray, external: np.ndarray) -> float | None:
    """Spearman of the two margins over the pairs both score; None below 3 such pairs.

    >>> implicit_external_spearman(np.array([1.0, 2.0, np.nan, 4.0]), np.array([0.1, 0.3, 0.2, 0.2]))
    0.5
    """
    both = np.isfinite(implicit) & np.isfinite(external)
    if both.sum() < 3:
        return None
    return spearman(implicit[both], external[both])


def describe(seed_policy: dict[str, Any] | None, implicit_external: float | None) -> str | None:
    """One line on pi_1 and what its margins agree with, for the CLI and the app's Score report.

    >>> line = describe({"split": "cross-fit", "trained_now": True, "folds": [
    ...     {"train_pairs": 500, "held_out_accuracy": 0.712, "best_step": 40, "steps": 60},
    ...     {"train_pairs": 480, "held_out_accuracy": 0.698, "best_step": 32, "steps": 56}]}, 0.4567)
    >>> line.split("; ")  # doctest: +NORMALIZE_WHITESPACE
    ['pi_1: cross-fit seed DPO, trained now on 500 + 480 pairs',
     'held-out accuracy 0.712 / 0.698 (best steps 40 / 32)', 'implicit vs external Spearman 0.457']
    """
    parts = []
    if seed_policy:
        folds = seed_policy["folds"]
        parts.append(
            f"pi_1: {seed_policy['split']} seed DPO{' (LoRA)' if seed_policy.get('lora') else ''}, "
            f"{'trained now' if seed_policy['trained_now'] else 'reused, trained'} on "
            + " + ".join(f"{fold['train_pairs']:,}" for fold in folds)
            + " pairs"
        )
        if all(fold["held_out_accuracy"] is not None for fold in folds):
            parts.append(
                "held-out accuracy "
                + " / ".join(f"{fold['held_out_accuracy']:.3f}" for fold in folds)
                + " (best steps "
                + " / ".join(str(fold["best_step"]) for fold in folds)
                + ")"
            )
        if seed_policy.get("excluded_pairs"):
            parts.append(f"{seed_policy['excluded_pairs']:,} D0 pairs without implicit margin (excluded)")
    if implicit_external is not None:
        parts.append(f"implicit vs external Spearman {implicit_external:.3f}")
    return "; ".join(parts) or None
