"""The seed policy pi_1 of implicit margins: pi_0 after DPO on a seed set D0.

Without a policy model, implicit margins need pi_1; it is made here once per workspace
and settings into ``WORKSPACE/models/seed-pi1-<fp>/`` (core.training.trainer does the DPO), and
core.scoring.run scores with it.

D0 must not inflate its own margins: a pi_1 scores its training pairs in-sample, so
they would look cleaner than they are. `ScoringConfig.seed_split` chooses the rule:

- ``cross-fit`` (the default): the pairs fall into two folds by one bit of their
  pair_id (a content hash, so an appended row always lands in the same fold; `seed`
  picks the bit). pi_1 of fold k trains on D0_k, drawn from fold k, and scores the
  pairs of the other fold. No pair is scored by a model that saw it and none loses its
  margin, so D0 can be large: by default the whole fold, up to `seed_pairs`.
- ``exclude``: one pi_1 trains on one D0 (by default 10% of the pairs, up to
  `seed_pairs`), and D0's pairs get no implicit margin (NaN, flagged ``seed_set``), so
  implicit-based selection leaves them out.

docs/selection_quality.md measures both; cross-fit wins because on small datasets the
excluded share would have to be large for pi_1 to learn anything.

Each pi_1 trains until its held-out preference accuracy stops rising (`Plateau`): the
held-out pairs are labelled pairs it does not train on but will score (a sample of the
other fold, or of the pairs outside D0); every half epoch the share of them whose
implicit margin is positive is measured with the scoring engine, training stops after
`seed_patience` evaluations without a new best (one that beats the best so far by more
than `seed_min_gain`), and the best weights are kept. Only that stopping step is chosen
with those labels.

With `seed_lora` pi_1 is a LoRA adapter and its frozen base (also its DPO reference)
loads in bf16 when training in bf16; scoring keeps the adapter unmerged on one copy of
pi_0 and switches it off for pi_0's log-probs (`adapter_views`): merged into bf16 weights,
a small DPO update would mostly round away, and one base serves both models.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.data.loading import LoadedDataset
from core.io.atomic import abandoned_temps, atomic_write_json, owner_tag, writing
from core.models.load import model_fingerprint
from core.models.logprobs import Encoded, pair_logprobs
from core.progress import ProgressFn
from core.scoring.config import ScoringConfig, ScoringError, digest, source_limits
from core.scoring.scorers import Pairs, encoded_pairs
from core.store.workspace import Workspace

SEED_SPLITS = ("cross-fit", "exclude")
EXCLUDE_FRACTION = 0.1
"""`seed_fraction` under ``exclude`` when none is given: D0 costs its pairs their margins."""
SEED_JSON = "seed.json"


def seed_set_size(n_pairs: int, config: ScoringConfig) -> int:
    """Pairs one seed policy trains on, drawn from `n_pairs` candidates (a cross-fit fold, or
    the whole dataset under exclude): `seed_pairs`, or on a small dataset `seed_fraction` of
    the candidates (by default all of a fold; 10% under exclude), at least `seed_min_pairs`.

    >>> [seed_set_size(n, ScoringConfig()) for n in (50, 200, 2000, 30000)]
    [50, 200, 2000, 2000]
    >>> [seed_set_size(n, ScoringConfig(seed_split="exclude")) for n in (50, 200, 4000, 60000)]
    [50, 64, 400, 2000]
    """
    fraction = config.seed_fraction
    if fraction is None:
        fraction = 1.0 if config.seed_split == "cross-fit" else EXCLUDE_FRACTION
    share = max(config.seed_min_pairs, math.ceil(fraction * n_pairs))
    return min(config.seed_pairs, share, n_pairs)


def seed_set_summary(n_pairs: int, config: ScoringConfig) -> str:
    """The D0 the settings amount to on `n_pairs` pairs, for the Score tab: one size under
    exclude, two under cross-fit (a fold is about half the pairs; the halves come from the ids).

    >>> [seed_set_summary(n, ScoringConfig(seed_pairs=1500)) for n in (1200, 30000)]
    ['2 × 600 (all)', '2 × 1,500 (cap)']
    >>> seed_set_summary(4000, ScoringConfig(seed_split="exclude"))
    '400 (10%)'
    """
    cross_fit = config.seed_split == "cross-fit"
    candidates = n_pairs // 2 if cross_fit else n_pairs
    size = seed_set_size(candidates, config)
    fraction = config.seed_fraction or (1.0 if cross_fit else EXCLUDE_FRACTION)
    rule = (
        "all"
        if size == candidates
        else "cap"
        if size == config.seed_pairs
        else "min"
        if size == config.seed_min_pairs
        else f"{fraction:.0%}"
    )
    return f"{'2 × ' if cross_fit else ''}{size:,} ({rule})"


def fold_of(pair_ids: Sequence[str], seed: int) -> np.ndarray:
    """0 or 1 per pair: bit ``seed % 64`` of its pair_id (16 hex digits of a content hash).

    >>> fold_of(["0000000000000001", "0000000000000002"], seed=0).tolist()
    [1, 0]
    >>> fold_of(["0000000000000001", "0000000000000002"], seed=1).tolist()
    [0, 1]
    """
    values = np.fromiter((int(pid, 16) for pid in pair_ids), dtype=np.uint64, count=len(pair_ids))
    return ((values >> np.uint64(seed % 64)) & np.uint64(1)).astype(np.int8)


# The plateau --------------------------------------------------------------------------------


def preference_accuracy(margins: np.ndarray) -> float:
    """Share of pairs whose margin favours the chosen response; a tie counts half.

    >>> preference_accuracy(np.array([1.0, -2.0, 0.0, 3.0]))
    0.625
    """
    return float(((margins > 0).sum() + 0.5 * (margins == 0).sum()) / len(margins))


def best_evaluation(accuracies: Sequence[float], min_gain: float = 0.0) -> int:
    """Index of the best accuracy, where a later one counts as better only when it beats the
    best so far by more than `min_gain` (so noise-sized creeps do not keep training going).

    >>> best_evaluation([0.60, 0.70, 0.703, 0.71], min_gain=0.005)
    3
    >>> best_evaluation([0.60, 0.70, 0.703, 0.704], min_gain=0.005)
    1
    """
    best = 0
    for index, accuracy in enumerate(accuracies):
        if accuracy > accuracies[best] + min_gain:
            best = index
    return best


def plateau_reached(accuracies: Sequence[float], patience: int, min_gain: float = 0.0) -> bool:
    """True once the last `patience` evaluations brought no new best (`best_evaluation`).

    >>> plateau_reached([0.6, 0.7, 0.7, 0.69], patience=2)
    True
    >>> plateau_reached([0.6, 0.7, 0.69, 0.71], patience=2)
    False
    """
    return len(accuracies) - 1 - best_evaluation(accuracies, min_gain) >= patience


class Plateau:
    """A `TrainerCallback` that stops seed DPO at a plateau of held-out accuracy and keeps the best weights.

    Every `every` optimiser steps it scores `held_out` (chosen, rejected) with the live
    model and pi_0 (the model as training starts), records the accuracy of the implicit
    margins, copies the trainable weights at each new best, stops once `plateau_reached`,
    and puts the best weights back when training ends.
    """

    def __init__(
        self, held_out: tuple[Encoded, Encoded], every: int, patience: int, batch_tokens: int, min_gain: float = 0.0
    ) -> None:
        self.held_out, self.every, self.patience, self.batch_tokens = held_out, every, patience, batch_tokens
        self.min_gain = min_gain
        self.history: list[tuple[int, float]] = []
        self.start_accuracy: float | None = None
        self._reference: np.ndarray | None = None
        self._best: dict[str, Any] | None = None

    @property
    def best(self) -> tuple[int, float] | None:
        """(step, accuracy) of the best evaluation so far."""
        if not self.history:
            return None
        return self.history[best_evaluation([accuracy for _, accuracy in self.history], self.min_gain)]

    @property
    def reached(self) -> bool:
        return plateau_reached([accuracy for _, accuracy in self.history], self.patience, self.min_gain)

    def _log_ratio_margins(self, model) -> np.ndarray:
        chosen, rejected = pair_logprobs(model, *self.held_out, batch_tokens=self.batch_tokens)
        return chosen.logprob_sum - rejected.logprob_sum

    def _evaluate(self, model) -> float:
        was_training = model.training
        model.eval()
        try:
            margins = self._log_ratio_margins(model) - self._reference
        finally:
            model.train(was_training)
        return preference_accuracy(margins)

    def __call__(self):
        """The transformers callback object (transformers is imported only when training)."""
        from transformers import TrainerCallback

        plateau = self

        class PlateauCallback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                model.eval()
                plateau._reference = plateau._log_ratio_margins(model)
                model.train()
                plateau.start_accuracy = preference_accuracy(np.zeros(len(plateau._reference)))

            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % plateau.every and state.global_step < state.max_steps:
                    return control
                accuracy = plateau._evaluate(model)
                plateau.history.append((state.global_step, accuracy))
                if plateau.best == (state.global_step, accuracy):
                    plateau._best = {
                        name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad
                    }
                if plateau.reached:
                    control.should_training_stop = True
                return control

            def on_train_end(self, args, state, control, model=None, **kwargs):
                if plateau._best is None or plateau.best[0] == state.global_step:
                    return
                import torch

                with torch.no_grad():
                    for name, parameter in model.named_parameters():
                        if name in plateau._best:
                            parameter.copy_(plateau._best[name].to(parameter.device))

        return PlateauCallback()


# Making pi_1 ----------------------------------------------------------------------------------


def _seed_settings(config: ScoringConfig) -> dict[str, Any]:
    """The settings a pi_1 depends on. ``min_prompt_tokens`` (it moves the held-out encoding of
    over-long pairs, so the plateau) came later and enters only when set, so pi_1 made before keep their folder."""
    settings = {
        name: getattr(config, name)
        for name in (
            "seed_split",
            "seed_pairs",
            "seed_fraction",
            "seed_min_pairs",
            "seed_epochs",
            "seed_steps",
            "seed_lr",
            "seed_beta",
            "seed_batch_size",
            "seed_patience",
            "seed_min_gain",
            "seed_eval_pairs",
            "seed_lora",
            "seed_lora_r",
            "seed",
            "max_length",
            "trust_remote_code",
            "allow_pickle",
        )
    }
    if config.min_prompt_tokens is not None:
        settings["min_prompt_tokens"] = config.min_prompt_tokens
    return settings


def seed_policy_dir(workspace: Workspace, config: ScoringConfig, reference_fingerprint: str) -> Path:
    """Where pi_1 of these seed settings lives once made: named by pi_0 and the settings."""
    name = f"seed-pi1-{digest({'reference': reference_fingerprint, **_seed_settings(config)})}"
    return workspace.root / "models" / name


@dataclass(frozen=True)
class SeedPolicy:
    """The pi_1 models of implicit scoring, which pair each one scores, and how they were made."""

    root: Path
    split: str
    models: tuple[Path, ...]
    """Exclude: one model; cross-fit: the models of fold 0 and fold 1."""
    seed: int
    lora: bool
    excluded_ids: frozenset[str]
    """Exclude: D0, whose pairs get no implicit margin."""
    record: dict[str, Any]
    """seed.json."""

    def route(self, pair_ids: Sequence[str]) -> np.ndarray:
        """Per pair, the index in `models` of the pi_1 that scores it; -1 for none (D0 under exclude)."""
        if self.split == "cross-fit":
            return (1 - fold_of(pair_ids, self.seed)).astype(np.int64)
        return np.array([-1 if pid in self.excluded_ids else 0 for pid in pair_ids], dtype=np.int64)

    def fingerprint(self) -> str:
        """What the implicit margins depend on: the models' weights and the routing rule."""
        return digest(
            {
                "split": self.split,
                "seed": self.seed,
                "lora": self.lora,
                "models": [model_fingerprint(m) for m in self.models],
                "excluded": digest(sorted(self.excluded_ids)),
            }
        )

    def report(self, trained_now: bool) -> dict[str, Any]:
        """What the Score report shows about pi_1 (core.scoring.seed_report.describe turns it into a line)."""
        folds = [
            {
                key: fold[key]
                for key in ("train_pairs", "held_out_pairs", "held_out_accuracy", "best_step", "steps", "stopped_by")
            }
            for fold in self.record["folds"]
        ]
        return {
            "path": str(self.root),
            "trained_now": trained_now,
            "split": self.split,
            "lora": self.lora,
            "seed_pairs": sum(fold["train_pairs"] for fold in folds),
            "folds": folds,
            "excluded_pairs": len(self.excluded_ids),
            "train_seconds": self.record["train_seconds"],
        }

    @classmethod
    def read(cls, root: Path) -> SeedPolicy:
        record = json.loads((root / SEED_JSON).read_text("utf-8"))
        return cls(
            root,
            record["settings"]["seed_split"],
            tuple(root / fold["model"] for fold in record["folds"]),
            record["settings"]["seed"],
            record["settings"]["seed_lora"],
            frozenset(record.get("excluded_pair_ids", ())),
            record,
        )


def prepare_seed_policy(
    dataset: LoadedDataset,
    workspace: Workspace,
    config: ScoringConfig,
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any] | None:
    """pi_1 trained (or found) ahead of `score` when implicit margins need a seed policy, else None.

    A sharded run's rank 0 calls this before the other ranks start scoring (core.scoring.distributed).
    """
    if "implicit" not in config.sources or config.policy_model is not None:
        return None
    config.validate()
    assert config.reference_model is not None, "validate: implicit margins need pi_0"
    _, info = ensure_seed_policy(
        dataset, workspace, config, model_fingerprint(config.reference_model), progress=progress, cancel=cancel
    )
    return info


@dataclass(frozen=True)
class _Fold:
    """One seed policy to train: its D0 and the held-out pairs of its plateau."""

    name: str
    train: np.ndarray
    held_out: np.ndarray


def _folds(pair_ids: list[str], config: ScoringConfig) -> list[_Fold]:
    """The training and held-out rows of each seed policy (indices into the dataset)."""
    rng = np.random.default_rng(config.seed)
    everything = np.arange(len(pair_ids))
    if config.seed_split == "cross-fit":
        fold = fold_of(pair_ids, config.seed)
        members = [everything[fold == k] for k in (0, 1)]
        if not all(len(m) for m in members):
            raise ScoringError(
                f"cross-fitting the seed policy needs pairs in both folds; {len(pair_ids)} pair(s) fill only one",
                "score more pairs, pass --seed-split exclude, or pass --policy-model",
            )
        train = [np.sort(rng.choice(m, seed_set_size(len(m), config), replace=False)) for m in members]
        candidates = [members[1], members[0]]  # each model is judged on the fold it will score
    else:
        train = [np.sort(rng.choice(everything, seed_set_size(len(pair_ids), config), replace=False))]
        candidates = [np.setdiff1d(everything, train[0])]
        if not len(candidates[0]):
            raise ScoringError(
                f"excluding D0 leaves no pair with an implicit margin: D0 takes all {len(pair_ids)} pairs",
                "pass --seed-split cross-fit, a smaller --seed-pairs, or --policy-model",
            )
    folds = []
    for k, (rows, pool) in enumerate(zip(train, candidates)):
        held_out = np.sort(rng.choice(pool, min(config.seed_eval_pairs, len(pool)), replace=False))
        folds.append(_Fold(f"fold-{k}" if config.seed_split == "cross-fit" else "policy", rows, held_out))
    return folds


def ensure_seed_policy(
    dataset: LoadedDataset,
    workspace: Workspace,
    config: ScoringConfig,
    reference_fingerprint: str,
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> tuple[SeedPolicy, dict[str, Any]]:
    """pi_1 for implicit margins: reused from ``WORKSPACE/models/seed-pi1-<fp>/`` or trained now.

    The folder is named by pi_0's fingerprint and the seed settings, not by the data, so
    once made it serves later runs on the same workspace, rows appended included (their
    implicit margins stay comparable with the rest). ``seed.json`` in it records each
    model's D0 and its plateau.
    """
    target = seed_policy_dir(workspace, config, reference_fingerprint)
    models_dir, name = target.parent, target.name
    if (target / SEED_JSON).is_file():
        policy = SeedPolicy.read(target)
        return policy, policy.report(trained_now=False)
    pair_ids = dataset.pairs["pair_id"].to_pylist()
    folds = _folds(pair_ids, config)
    prefix = f".{name}.building-"
    with writing(models_dir):
        models_dir.mkdir(parents=True, exist_ok=True)
        for abandoned in abandoned_temps(models_dir, prefix):  # a training killed earlier
            shutil.rmtree(abandoned, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=models_dir))
    started = time.monotonic()
    assert config.reference_model is not None, "ScoringConfig.validate: implicit margins need pi_0"
    try:
        records = [
            _train_fold(dataset, fold, index, len(folds), building, config, progress, cancel)
            for index, fold in enumerate(folds)
        ]
        record = {
            "reference_model": config.reference_model,
            "reference_fingerprint": reference_fingerprint,
            "settings": _seed_settings(config),
            "folds": records,
            "train_seconds": round(time.monotonic() - started, 2),
        }
        if config.seed_split == "exclude":
            record["excluded_pair_ids"] = [pair_ids[i] for i in folds[0].train]
        with writing(models_dir):
            atomic_write_json(building / SEED_JSON, record)
            building.rename(target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    policy = SeedPolicy.read(target)
    return policy, policy.report(trained_now=True)


def held_out_pairs(tokenizer, pairs: Pairs, config: ScoringConfig) -> tuple[Encoded, Encoded]:
    """`pairs` encoded exactly as implicit scoring encodes them (core.scoring.scorers.encoded_pairs, pi_0's
    token limits), without the pairs it would give no margin (same tokens, skipped)."""
    chosen, rejected, _, run = encoded_pairs(tokenizer, pairs, source_limits(config, [config.reference_model]))
    return chosen.subset(run), rejected.subset(run)


def _train_fold(
    dataset: LoadedDataset,
    fold: _Fold,
    index: int,
    count: int,
    building: Path,
    config: ScoringConfig,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> dict[str, Any]:
    """DPO of pi_0 on one D0 to the plateau; its model lands in ``building/<fold.name>``."""
    from core.models.load import load_tokenizer
    from core.training.trainer import TrainConfig, train

    rows = dataset.pairs.take(pa.array(fold.train))
    train_config = TrainConfig(
        lr=config.seed_lr,
        epochs=config.seed_epochs,
        max_steps=config.seed_steps,
        beta=config.seed_beta,
        batch_size=config.seed_batch_size,
        per_device_batch_size=config.seed_per_device_batch_size,
        max_length=config.max_length,
        seed=config.seed,
        scheduler="constant_with_warmup",
        save_steps=10**9,
        save_total_limit=1,
        lora=config.seed_lora,
        lora_r=config.seed_lora_r,
        lora_alpha=2 * config.seed_lora_r,
        model=str(config.reference_model),
        trust_remote_code=config.trust_remote_code,
        allow_pickle=config.allow_pickle,
    )
    stage = "seed DPO" + (f" {index + 1}/{count}" if count > 1 else "")
    callbacks, plateau = [], None
    if len(fold.held_out):
        held = dataset.pairs.select(["prompt", "chosen", "rejected"]).take(pa.array(fold.held_out)).to_pydict()
        tokenizer = load_tokenizer(str(config.reference_model), trust_remote_code=config.trust_remote_code)
        conversational = dataset.format == "conversational"
        held_out = held_out_pairs(
            tokenizer, Pairs(held["prompt"], held["chosen"], held["rejected"], conversational), config
        )
        steps_per_epoch = math.ceil(len(fold.train) / config.seed_batch_size)
        plateau = Plateau(
            held_out,
            every=max(1, steps_per_epoch // 2),
            patience=config.seed_patience,
            batch_tokens=config.batch_tokens,
            min_gain=config.seed_min_gain,
        )
        callbacks.append(plateau())

    def report(update):
        if progress is None:
            return
        latest = f"held-out accuracy {plateau.history[-1][1]:.3f}" if plateau and plateau.history else ""
        progress(replace(update, stage=stage, message=" ".join(filter(None, (update.message, latest)))))

    started = time.monotonic()
    result = train(
        train_config,
        rows,
        building / f"run-{fold.name}",
        metrics_sink=lambda record: None,
        progress=report,
        cancel=cancel,
        callbacks=callbacks,
    )
    result.final.rename(building / fold.name)
    shutil.rmtree(building / f"run-{fold.name}", ignore_errors=True)
    best = plateau.best if plateau else None
    stopped_by = "plateau" if plateau and plateau.reached else "step cap"
    return {
        "model": fold.name,
        "train_pairs": len(fold.train),
        "train_pair_ids": rows["pair_id"].to_pylist(),
        "held_out_pairs": len(fold.held_out),
        "held_out_accuracy": best[1] if best else None,
        "start_accuracy": plateau.start_accuracy if plateau else None,
        "best_step": best[0] if best else None,
        "steps": result.steps,
        "stopped_by": stopped_by,
        "history": [list(entry) for entry in plateau.history] if plateau else [],
        "train_seconds": round(time.monotonic() - started, 2),
    }


# Scoring with pi_1 ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterView:
    """pi_0 or one pi_1 as seen through one PeftModel that carries every LoRA seed adapter.

    `lend` switches the shared model to this view's state: adapter `adapter` on, or with
    None every adapter off (pi_0). core.scoring.scorers.implicit_columns takes such views.
    """

    model: Any
    adapter: str | None

    @contextmanager
    def lend(self) -> Iterator[Any]:
        if self.adapter is None:
            with self.model.disable_adapter():
                yield self.model
        else:
            self.model.set_adapter(self.adapter)
            yield self.model


def adapter_views(base, adapter_paths: Sequence[Path]) -> tuple[AdapterView, list[AdapterView]]:
    """pi_0 and the pi_1 of each adapter, all on `base` (a loaded pi_0 no one else uses), unmerged."""
    from peft import PeftModel

    names = [f"pi1-{k}" for k in range(len(adapter_paths))]
    model = PeftModel.from_pretrained(base, str(adapter_paths[0]), adapter_name=names[0])
    for name, path in zip(names[1:], adapter_paths[1:]):
        model.load_adapter(str(path), adapter_name=name)
    model.eval()
    return AdapterView(model, None), [AdapterView(model, name) for name in names]
