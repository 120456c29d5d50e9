"""What a scoring run is asked to do (`ScoringConfig`), its errors, the token limits of a source,
and the fingerprint digest: shared by the run (core.scoring.run) and the seed policy
(core.scoring.seed_policy), which must not import each other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from core.errors import DmtuiError
from core.models.load import model_context_length
from core.models.logprobs import DEFAULT_BATCH_TOKENS
from core.scoring.scorers import Limits
from core.selection.selector import MARGIN_SOURCES

SOURCES = MARGIN_SOURCES
MAX_LENGTH_CAP = 4096
"""Default token limit: the models' context, but no more than this (a 128k-context model would
otherwise pad every batch to its longest pair; UltraFeedback and HH pairs fit in 4k)."""


class ScoringError(DmtuiError):
    """Scoring cannot run as configured."""


@dataclass(frozen=True)
class ScoringConfig:
    """What to score and with which models; every field that changes numbers enters a fingerprint."""

    sources: tuple[str, ...] = ("external", "implicit")
    """Margin sources to compute, a subset of `SOURCES`."""
    reward_model: str | None = None
    """External margins: a sequence-classification reward model (folder or hub id, num_labels 1)."""
    reference_model: str | None = None
    """pi_0, the SFT model: the reference of implicit margins and the model of IFD."""
    policy_model: str | None = None
    """pi_1 (a folder, hub id or LoRA adapter on pi_0). None with implicit requested: seed DPO makes it."""
    seed_split: str = "cross-fit"
    """Seed DPO: how D0 is kept from inflating its own margins (core.scoring.seed_policy): cross-fit
    (two pi_1, each scoring the fold it did not train on) or exclude (D0 gets no implicit margin)."""
    seed_pairs: int = 2000
    """Seed DPO: most pairs one pi_1 trains on (the paper's 2,000 random pairs)."""
    seed_fraction: float | None = None
    """Seed DPO on a small dataset: D0 is this share of its candidates when that is below `seed_pairs`
    (None: all of a cross-fit fold, 10% under exclude) ..."""
    seed_min_pairs: int = 64
    """... but never fewer pairs than this (nor more than the dataset has)."""
    seed_epochs: float = 10.0
    """Seed DPO: most passes over D0; training stops earlier at the held-out accuracy plateau."""
    seed_steps: int | None = None
    """Seed DPO: most optimiser steps (overrides `seed_epochs`)."""
    seed_patience: int = 4
    """Seed DPO: evaluations (one every half epoch) without a new best held-out accuracy before it stops."""
    seed_min_gain: float = 0.005
    """Seed DPO: a held-out accuracy counts as a new best only when it beats the best so far by more."""
    seed_eval_pairs: int = 1000
    """Seed DPO: most held-out pairs each pi_1's accuracy is measured on."""
    seed_lora: bool = False
    """Seed DPO: train a LoRA adapter (kept unmerged for scoring) instead of every weight."""
    seed_lora_r: int = 16
    """Seed DPO: LoRA rank (alpha is twice the rank)."""
    seed_lr: float = 5e-7
    """Seed DPO: peak learning rate (the paper's, for 3B models; tiny models want ~1e-4 or more)."""
    seed_beta: float = 0.1
    """Seed DPO: beta."""
    seed_batch_size: int = 32
    """Seed DPO: global batch in pairs."""
    seed_per_device_batch_size: int = 4
    """Seed DPO: most pairs one device processes at once (gradient accumulation makes up the rest)."""
    seed: int = 0
    """Seed of the D0 draw and of seed DPO."""
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    """Padded tokens per forward pass (halved automatically on out-of-memory). Not in fingerprints."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, ... Not in fingerprints."""
    dtype: str = "auto"
    """auto (bf16/fp16 on cuda, fp32 elsewhere), float32, bfloat16 or float16."""
    max_length: int | None = None
    """Longest context + response in tokens; None: the models' context, at most `MAX_LENGTH_CAP`
    (a given value is also capped by the models'). Longer pairs are cut (core.models.logprobs) and counted."""
    min_prompt_tokens: int | None = None
    """Context tokens a cut keeps at least; None: half the token limit."""
    reward_template: bool = True
    """Standard rows reach the reward model through its chat template (one user and one assistant
    turn) when its tokenizer has one; False: as plain prompt + response + EOS."""
    skip_truncated: bool = False
    """Skip over-long pairs instead of truncating them: stored with margin NaN and ``skipped``."""
    checkpoint_every: int = 1000
    """Pairs per checkpoint: each is appended to the score table atomically."""
    trust_remote_code: bool = False
    """Allow models that ship their own Python code."""
    allow_pickle: bool = False
    """Allow pickle weight files (they can run code when loaded)."""

    def validate(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if unknown or not self.sources:
            raise ScoringError(
                f"unknown margin source {unknown[0]!r}" if unknown else "no margin source to score",
                f"choose from {', '.join(SOURCES)}, e.g. --sources external,implicit",
            )
        if len(set(self.sources)) != len(self.sources):
            raise ScoringError(f"a margin source is named twice in {','.join(self.sources)}")
        if "external" in self.sources and not self.reward_model:
            raise ScoringError("external margins need a reward model", "pass --reward-model (a folder or model id)")
        if ("implicit" in self.sources or "ifd" in self.sources) and not self.reference_model:
            raise ScoringError(
                f"{' and '.join(s for s in self.sources if s != 'external')} margins need the reference model pi_0",
                "pass --reference-model (the SFT model)",
            )
        if self.seed_split not in ("cross-fit", "exclude"):
            raise ScoringError(f"unknown seed split {self.seed_split!r}", "choose cross-fit or exclude")
        for name in (
            "checkpoint_every",
            "batch_tokens",
            "seed_pairs",
            "seed_min_pairs",
            "seed_batch_size",
            "seed_per_device_batch_size",
            "seed_patience",
            "seed_eval_pairs",
            "seed_lora_r",
        ):
            if getattr(self, name) < 1:
                raise ScoringError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 2:
            raise ScoringError(f"max_length must be at least 2 tokens, not {self.max_length}")
        if self.min_prompt_tokens is not None and not (
            0 <= self.min_prompt_tokens < (self.max_length or MAX_LENGTH_CAP)
        ):
            raise ScoringError(
                f"min_prompt_tokens must be from 0 to below the token limit "
                f"({self.max_length or MAX_LENGTH_CAP}), not {self.min_prompt_tokens}"
            )
        if not 0 <= self.seed_min_gain < 1:
            raise ScoringError(f"seed_min_gain must be in [0, 1), not {self.seed_min_gain}")
        if self.seed_fraction is not None and not 0 < self.seed_fraction <= 1:
            raise ScoringError(f"seed_fraction must be in (0, 1], not {self.seed_fraction}")


def source_max_length(config: ScoringConfig, paths) -> int:
    """`config.max_length` (or `MAX_LENGTH_CAP`) capped by the context of every model in `paths`."""
    limits = [n for n in (model_context_length(path) for path in paths if path) if n]
    return min([config.max_length or MAX_LENGTH_CAP, *limits])


def source_limits(config: ScoringConfig, paths) -> Limits:
    """The token limits of a source whose models are `paths` (see `source_max_length`)."""
    limit = source_max_length(config, paths)
    floor = config.min_prompt_tokens
    return Limits(limit, limit // 2 if floor is None else min(floor, limit - 1), config.skip_truncated)


def seed_config(config: ScoringConfig) -> ScoringConfig:
    """`config` with the token limit the seed DPO of pi_1 trains under (pi_0's), as core.scoring.seed_policy
    takes it."""
    if not config.reference_model:
        return config
    return replace(config, max_length=source_max_length(config, [config.reference_model]))


def digest(payload: Any) -> str:
    """A short stable fingerprint of a JSON-able payload (16 hex digits of its sha256)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]
