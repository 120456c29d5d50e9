"""Scoring every pair with the margin sources of METHOD.md: external, implicit, IFD.

- external: m_ex = r(x, y_w) - r(x, y_l) with a sequence-classification reward model
  (one label). The text is what TRL's RewardTrainer trains on: conversational data
  through the REWARD MODEL's chat template, standard data as prompt + response + EOS.
  Sequences are right-padded with the model's own pad id, so its pooling (the rightmost
  token that is not padding) lands on the last real token; a self-check at the start of
  a run compares a padded batch with unpadded sequences and falls back to one sequence
  per forward when they disagree (`SourceReport.notes` says so).
- implicit: m_im = (log pi_1(y_w|x) - log pi_0(y_w|x)) - (log pi_1(y_l|x) - log pi_0(y_l|x)),
  sums over response tokens (core.logprobs), tokens from pi_0's tokenizer and template.
  Without a policy model, pi_1 is pi_0 after DPO on a seed set D0 (core.seed_policy),
  trained once per workspace and settings into ``WORKSPACE/models/seed-pi1-<fp>/``.
- ifd: under pi_0, IFD(y|x) = PPL(y|x) / PPL(y), PPL = exp(-sum / n); margin IFD_w - IFD_l.
  PPL(y) scores the very response tokens PPL(y|x) scored, after the empty context
  (BOS alone; see core.logprobs), so truncation cuts both the same way.

Every source has its own score table (core.scores), named by a fingerprint of the
source, its models' fingerprints and every setting that changes numbers (max_length,
skip_truncated, dtype; not batch size or device). Pairs already in the table are reused;
the rest are scored in checkpoints of `checkpoint_every` pairs, each appended as one
atomic part, so a killed run resumes where its last checkpoint ended and appended rows
cost only their own scoring. Checkpoints take the pending pairs in dataset order, so a
resumed run forms the same batches as an uninterrupted one and ends with the same numbers.

Pairs are reported, never scored as signal, when chosen and rejected are the same
tokens after truncation (``token_identical``) or when `skip_truncated` skips an
over-long pair (``skipped``): both are stored with margin NaN, which selection treats
as unscored. Over-long pairs that are scored carry ``truncated``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from core.errors import Cancelled, DmtuiError
from core.loading import LoadedDataset
from core.logprobs import (
    DEFAULT_BATCH_TOKENS,
    Encoded,
    encode,
    pair_logprobs,
    response_logprobs,
    run_batches,
    token_identical_pairs,
)
from core.models import (
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    model_fingerprint,
    pick_device,
    pick_dtype,
)
from core.progress import Progress, ProgressFn, Reporter
from core.scores import ScoreStore, values_for
from core.workspace import Workspace

SOURCES = ("external", "implicit", "ifd")
SCORER_VERSION = 1
"""Bump when a change here changes stored numbers: it enters every fingerprint."""
MODEL_CACHE_SIZE = 4
"""Models and tokenizers kept loaded between `score` calls (reward, pi_0, pi_1, tokenizer)."""
PADDING_CHECK_TOLERANCE = 1e-3


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
    seed_pairs: int = 2000
    """Seed DPO: most pairs in D0 (the paper's 2,000 random pairs)."""
    seed_fraction: float = 0.1
    """Seed DPO on a small dataset: D0 is this share of it when that is below `seed_pairs` ..."""
    seed_min_pairs: int = 64
    """... but never fewer pairs than this (nor more than the dataset has)."""
    seed_epochs: float = 2.0
    """Seed DPO: passes over D0."""
    seed_steps: int | None = None
    """Seed DPO: stop after this many optimiser steps (overrides `seed_epochs`)."""
    seed_lr: float = 5e-7
    """Seed DPO: peak learning rate (the paper's, for 3B models; tiny models want ~1e-4 or more)."""
    seed_beta: float = 0.1
    """Seed DPO: beta."""
    seed_batch_size: int = 32
    """Seed DPO: global batch in pairs."""
    seed: int = 0
    """Seed of the D0 draw and of seed DPO."""
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    """Padded tokens per forward pass (halved automatically on out-of-memory). Not in fingerprints."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, ... Not in fingerprints."""
    dtype: str = "auto"
    """auto (bf16/fp16 on cuda, fp32 elsewhere), float32, bfloat16 or float16."""
    max_length: int | None = 1024
    """Longest prompt + response in tokens (also capped by each model's max_position_embeddings):
    longer pairs are truncated (prompt from the left, then response from the right) and counted."""
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
        for name in ("checkpoint_every", "batch_tokens", "seed_pairs", "seed_min_pairs", "seed_batch_size"):
            if getattr(self, name) < 1:
                raise ScoringError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 2:
            raise ScoringError(f"max_length must be at least 2 tokens, not {self.max_length}")
        if not 0 < self.seed_fraction <= 1:
            raise ScoringError(f"seed_fraction must be in (0, 1], not {self.seed_fraction}")


@dataclass
class SourceReport:
    """What one source's run did, for this rank's pairs."""

    source: str
    fingerprint: str
    pairs: int = 0
    """Pairs of the dataset this rank is responsible for."""
    scored: int = 0
    """Pairs scored (and stored) by this run."""
    reused: int = 0
    """Pairs already in the score table."""
    truncated: int = 0
    """Pairs in the table scored after truncation."""
    skipped_truncated: int = 0
    """Over-long pairs skipped (`skip_truncated`), stored with margin NaN."""
    token_identical_ids: list[str] = field(default_factory=list)
    """Pairs whose chosen and rejected are the same tokens as scored: margin NaN."""
    seconds: float = 0.0
    models: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def pairs_per_s(self) -> float | None:
        return self.scored / self.seconds if self.scored and self.seconds > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "token_identical": len(self.token_identical_ids),
                "pairs_per_s": None if self.pairs_per_s is None else round(self.pairs_per_s, 2)}


@dataclass
class ScoringReport:
    """Per source what was scored and reused; the seed policy when one was used."""

    sources: dict[str, SourceReport] = field(default_factory=dict)
    device: str = ""
    dtype: str = ""
    rank: int = 0
    world_size: int = 1
    seed_policy: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"sources": {name: report.to_json() for name, report in self.sources.items()},
                "device": self.device, "dtype": self.dtype, "rank": self.rank,
                "world_size": self.world_size, "seed_policy": self.seed_policy}


class ScoringCancelled(Cancelled):
    """The cancel event stopped scoring; every checkpoint written is kept, `report` says how far it got."""

    def __init__(self, message: str, report: ScoringReport) -> None:
        super().__init__(message, "run the same command again to resume from the last checkpoint")
        self.report = report


# Models ---------------------------------------------------------------------------

_loaded: OrderedDict[tuple, Any] = OrderedDict()
_loaded_lock = threading.Lock()


def clear_model_cache() -> None:
    """Forget every model kept loaded between `score` calls (frees their memory)."""
    with _loaded_lock:
        _loaded.clear()


def _cached(key: tuple, load: Callable[[], Any]) -> Any:
    """Keyed by fingerprint, not path, so retrained weights in the same folder are reloaded."""
    with _loaded_lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
    value = load()
    with _loaded_lock:
        _loaded[key] = value
        while len(_loaded) > MODEL_CACHE_SIZE:
            _loaded.popitem(last=False)
    return value


@dataclass(frozen=True)
class _Runtime:
    config: ScoringConfig
    device: torch.device
    dtype: torch.dtype

    def model(self, kind: str, path: str, fingerprint: str):
        load = load_reward_model if kind == "reward" else load_causal_lm
        return _cached(
            (kind, fingerprint, str(self.device), str(self.dtype), self.config.trust_remote_code,
             self.config.allow_pickle),
            lambda: load(path, device=self.device, dtype=self.dtype,
                         trust_remote_code=self.config.trust_remote_code, allow_pickle=self.config.allow_pickle),
        )

    def tokenizer(self, path: str, fingerprint: str):
        return _cached(("tokenizer", fingerprint, self.config.trust_remote_code),
                       lambda: load_tokenizer(path, trust_remote_code=self.config.trust_remote_code))

    def max_length(self, *models) -> int | None:
        """`config.max_length` capped by the models' position limits (None: no limit at all)."""
        limits = [getattr(m.config, "max_position_embeddings", None) for m in models]
        limits = [n for n in limits if n] + ([self.config.max_length] if self.config.max_length else [])
        return min(limits) if limits else None


# Scoring a chunk, per source --------------------------------------------------------

PassProgress = Callable[[int, int], ProgressFn | None]
"""(pass index, passes) -> progress callback of one engine pass over a chunk."""


@dataclass
class _Chunk:
    prompts: list
    chosen: list
    rejected: list
    conversational: bool


def _screen(chosen: Encoded, rejected: Encoded, skip_truncated: bool) -> dict[str, np.ndarray]:
    """Flags of a chunk's pairs, and which of them go through the models (``run``)."""
    truncated = chosen.truncated | rejected.truncated
    identical = token_identical_pairs(chosen, rejected)
    skipped = truncated & skip_truncated
    return {"truncated": truncated, "token_identical": identical & ~skipped, "skipped": skipped,
            "run": ~identical & ~skipped}


def _subset(encoded: Encoded, mask: np.ndarray) -> Encoded:
    keep = np.flatnonzero(mask)
    return Encoded([encoded.prompt_ids[i] for i in keep], [encoded.response_ids[i] for i in keep],
                   encoded.truncated[keep])


def _spread(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Values of the pairs in `mask` placed back among all pairs, NaN elsewhere."""
    out = np.full(len(mask), np.nan)
    out[mask] = values
    return out


class _ExternalScorer:
    """Reward-model scores of chosen and rejected; margin their difference."""

    def __init__(self, runtime: _Runtime, model: tuple[str, str]) -> None:
        self.runtime, self.model_ref = runtime, model
        self.padding_safe: bool | None = None
        self.notes: list[str] = []

    def __call__(self, chunk: _Chunk, pass_progress: PassProgress, cancel) -> dict[str, np.ndarray]:
        runtime = self.runtime
        model = runtime.model("reward", *self.model_ref)
        tokenizer, chosen, rejected, flags, run = _screened_pairs(runtime, chunk, self.model_ref, model)
        sequences = [p + r for side in (chosen, rejected) for p, r in zip(*_ids(_subset(side, run)))]
        checked_before = self.padding_safe is not None
        rewards, self.padding_safe = reward_scores(
            model, tokenizer, sequences, runtime.device, runtime.config.batch_tokens,
            padding_safe=self.padding_safe, progress=pass_progress(0, 1), cancel=cancel)
        if not checked_before and self.padding_safe is False:
            self.notes.append("the reward model's score changed with padding: scored one sequence per "
                              "forward pass (slow but exact)")
        n_run = int(run.sum())
        reward_chosen, reward_rejected = _spread(rewards[:n_run], run), _spread(rewards[n_run:], run)
        return {"margin": reward_chosen - reward_rejected, "reward_chosen": reward_chosen,
                "reward_rejected": reward_rejected, **flags}


def _ids(encoded: Encoded) -> tuple[list[list[int]], list[list[int]]]:
    return encoded.prompt_ids, encoded.response_ids


def reward_scores(model, tokenizer, sequences: list[list[int]], device, batch_tokens: int, *,
                  padding_safe: bool | None = None, progress: ProgressFn | None = None,
                  cancel: threading.Event | None = None) -> tuple[np.ndarray, bool | None]:
    """Reward-model score of each token sequence, and whether padded batches are exact.

    `padding_safe` None checks it once on these sequences (a padded batch against the
    same sequences unpadded); False scores one sequence per forward pass.
    """
    pad_id = _pad_id(model, tokenizer)
    if padding_safe is None and sequences:
        padding_safe = _padding_is_safe(model, sequences, pad_id, device)
    budget = batch_tokens if padding_safe is not False else 1
    return _reward_scores(model, sequences, pad_id, device, budget, progress, cancel), padding_safe


def _pad_id(model, tokenizer) -> int:
    """The id the model's pooling treats as padding (it compares input ids with it)."""
    pad = getattr(model.config.get_text_config(), "pad_token_id", None)
    if pad is None:
        pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


@torch.inference_mode()
def _reward_forward(model, sequences: list[list[int]], pad_id: int, device) -> np.ndarray:
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
    return logits[:, 0].float().cpu().numpy().astype(np.float64)


def _padding_is_safe(model, sequences: list[list[int]], pad_id: int, device) -> bool:
    """Do the shortest and longest sequence score the same right-padded together as alone?"""
    lengths = [len(s) for s in sequences]
    short, long = sequences[int(np.argmin(lengths))], sequences[int(np.argmax(lengths))]
    if len(short) == len(long):
        return True
    try:
        batched = _reward_forward(model, [short, long], pad_id, device)
    except (ValueError, IndexError):  # e.g. "cannot handle batch sizes > 1 if no padding token"
        return False
    alone = np.array([_reward_forward(model, [s], pad_id, device)[0] for s in (short, long)])
    return bool(np.all(np.abs(batched - alone) <= PADDING_CHECK_TOLERANCE * (1 + np.abs(alone))))


def _reward_scores(model, sequences, pad_id, device, batch_tokens, progress, cancel) -> np.ndarray:
    scores = np.zeros(len(sequences), dtype=np.float64)
    if not sequences:
        return scores
    lengths = [len(s) for s in sequences]

    def score(batch: list[int]) -> None:
        scores[batch] = _reward_forward(model, [sequences[i] for i in batch], pad_id, device)

    reporter = Reporter("reward", len(sequences), progress, cancel, unit="sequences")
    run_batches(range(len(sequences)), lengths, batch_tokens, score, reporter, per_item=1)
    reporter.finish()
    return scores


def _screened_pairs(runtime: _Runtime, chunk: _Chunk, tokenizer_ref: tuple[str, str], *models):
    """What every scorer starts with: (tokenizer, chosen, rejected, flags, run), the chunk
    encoded within the models' length limit and screened (`run`: the pairs to score)."""
    tokenizer = runtime.tokenizer(*tokenizer_ref)
    max_length = runtime.max_length(*models)
    chosen, rejected = (encode(tokenizer, chunk.prompts, responses, conversational=chunk.conversational,
                               max_length=max_length)
                        for responses in (chunk.chosen, chunk.rejected))
    flags = _screen(chosen, rejected, runtime.config.skip_truncated)
    return tokenizer, chosen, rejected, flags, flags.pop("run")


class _ImplicitScorer:
    """Log-prob sums under pi_1 and pi_0; margin (lp1_c - lp0_c) - (lp1_r - lp0_r)."""

    def __init__(self, runtime: _Runtime, reference: tuple[str, str], policy: tuple[str, str]) -> None:
        self.runtime, self.reference, self.policy = runtime, reference, policy
        self.notes: list[str] = []

    def __call__(self, chunk: _Chunk, pass_progress: PassProgress, cancel) -> dict[str, np.ndarray]:
        runtime = self.runtime
        pi0, pi1 = runtime.model("causal", *self.reference), runtime.model("causal", *self.policy)
        _, chosen, rejected, flags, run = _screened_pairs(runtime, chunk, self.reference, pi0, pi1)
        chosen, rejected = _subset(chosen, run), _subset(rejected, run)
        columns = {}
        for index, (name, model) in enumerate((("policy", pi1), ("reference", pi0))):
            lp_c, lp_r = pair_logprobs(model, chosen, rejected, batch_tokens=runtime.config.batch_tokens,
                                       progress=pass_progress(index, 2), cancel=cancel)
            columns[f"logp_{name}_chosen"] = _spread(lp_c.logprob_sum, run)
            columns[f"logp_{name}_rejected"] = _spread(lp_r.logprob_sum, run)
        columns["tokens_chosen"] = _spread(lp_c.n_tokens, run)
        columns["tokens_rejected"] = _spread(lp_r.n_tokens, run)
        margin = ((columns["logp_policy_chosen"] - columns["logp_reference_chosen"])
                  - (columns["logp_policy_rejected"] - columns["logp_reference_rejected"]))
        return {"margin": margin, **columns, **flags}


class _IfdScorer:
    """IFD = PPL(y|x) / PPL(y) under pi_0 for chosen and rejected; margin IFD_c - IFD_r."""

    def __init__(self, runtime: _Runtime, reference: tuple[str, str]) -> None:
        self.runtime, self.reference = runtime, reference
        self.notes: list[str] = []

    def __call__(self, chunk: _Chunk, pass_progress: PassProgress, cancel) -> dict[str, np.ndarray]:
        runtime = self.runtime
        pi0 = runtime.model("causal", *self.reference)
        tokenizer, chosen, rejected, flags, run = _screened_pairs(runtime, chunk, self.reference, pi0)
        chosen, rejected = _subset(chosen, run), _subset(rejected, run)
        conditional = pair_logprobs(pi0, chosen, rejected, batch_tokens=runtime.config.batch_tokens,
                                    progress=pass_progress(0, 2), cancel=cancel)
        # PPL(y): the same response tokens after the empty context (BOS alone).
        empty = [] if chunk.conversational else ""
        context = encode(tokenizer, [empty], [chunk.chosen[0]], conversational=chunk.conversational,
                         max_length=None).prompt_ids[0]
        responses = chosen.response_ids + rejected.response_ids
        alone = Encoded([list(context) for _ in responses], responses,
                        np.concatenate([chosen.truncated, rejected.truncated]))
        unconditional = response_logprobs(pi0, alone, batch_tokens=runtime.config.batch_tokens,
                                          progress=pass_progress(1, 2), cancel=cancel)
        n = len(chosen)
        columns = {}
        for side, result, part in zip(("chosen", "rejected"), conditional, (slice(0, n), slice(n, 2 * n))):
            u_sum, u_count = unconditional.logprob_sum[part], unconditional.n_tokens[part]
            with np.errstate(divide="ignore", invalid="ignore"):  # 0 tokens: NaN
                log_ifd = u_sum / u_count - result.logprob_sum / result.n_tokens  # log PPL(y|x) - log PPL(y)
            columns[f"ifd_{side}"] = _spread(np.exp(log_ifd), run)
            columns[f"logp_conditional_{side}"] = _spread(result.logprob_sum, run)
            columns[f"logp_unconditional_{side}"] = _spread(u_sum, run)
            columns[f"tokens_conditional_{side}"] = _spread(result.n_tokens, run)
            columns[f"tokens_unconditional_{side}"] = _spread(u_count, run)
        return {"margin": columns["ifd_chosen"] - columns["ifd_rejected"], **columns, **flags}


# Fingerprints ---------------------------------------------------------------------------

def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _settings(config: ScoringConfig, dtype: torch.dtype) -> dict[str, Any]:
    """The settings that change numbers (batch size and device only move the last float bits)."""
    return {"max_length": config.max_length, "skip_truncated": config.skip_truncated,
            "dtype": str(dtype).removeprefix("torch."), "scorer_version": SCORER_VERSION}


@dataclass
class _Plan:
    source: str
    fingerprint: str
    meta: dict[str, Any]
    scorer: _ExternalScorer | _ImplicitScorer | _IfdScorer


def _plans(dataset, workspace, config, runtime, report, progress, cancel, rank) -> list[_Plan]:
    from core.seed_policy import ensure_seed_policy, seed_policy_dir

    settings = _settings(config, runtime.dtype)
    fingerprints = {}
    if config.reward_model and "external" in config.sources:
        fingerprints["reward"] = model_fingerprint(config.reward_model)
    if config.reference_model and {"implicit", "ifd"} & set(config.sources):
        fingerprints["reference"] = model_fingerprint(config.reference_model)
    policy = config.policy_model
    if "implicit" in config.sources:
        if policy is None:
            seed_dir = seed_policy_dir(workspace, config, fingerprints["reference"])
            if rank != 0 and not (seed_dir / "seed.json").is_file():
                raise ScoringError(
                    f"the seed policy pi_1 is not made yet ({seed_dir}); in a sharded run only rank 0 trains it",
                    "run rank 0 first (under torchrun or accelerate launch the other ranks wait for it), "
                    "or pass --policy-model",
                )
            path, report.seed_policy = ensure_seed_policy(
                dataset, workspace, config, fingerprints["reference"], progress=progress, cancel=cancel)
            policy = str(path)
        fingerprints["policy"] = model_fingerprint(policy)
    paths = {"reward": config.reward_model, "reference": config.reference_model, "policy": policy}
    uses = {"external": ("reward",), "implicit": ("policy", "reference"), "ifd": ("reference",)}
    plans = []
    for source in config.sources:
        models = {role: paths[role] for role in uses[source]}
        model_fps = {role: fingerprints[role] for role in uses[source]}
        fingerprint = _digest({"source": source, "models": model_fps, "settings": settings})
        meta = {"models": models, "model_fingerprints": model_fps, "settings": settings,
                "format": dataset.format}
        reference = (paths["reference"], fingerprints.get("reference"))
        if source == "external":
            scorer = _ExternalScorer(runtime, (paths["reward"], fingerprints["reward"]))
        elif source == "implicit":
            scorer = _ImplicitScorer(runtime, reference, (policy, fingerprints["policy"]))
        else:
            scorer = _IfdScorer(runtime, reference)
        plans.append(_Plan(source, fingerprint, meta, scorer))
    return plans


# The run ----------------------------------------------------------------------------

def score(
    dataset: LoadedDataset,
    workspace: Workspace,
    config: ScoringConfig,
    *,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> ScoringReport:
    """Score the pairs of `dataset` not yet in the workspace's tables, for every source in `config`.

    This process takes the pairs whose index i has ``i % world_size == rank`` (its parts
    carry its rank), so the same call runs alone or as one rank of many; only rank 0
    trains a seed policy, the others need it made (`prepare_seed_policy`). A set `cancel`
    stops at the next batch: checkpoints written stay, the unfinished one is redone on
    the next run, and `ScoringCancelled` carries the report so far.
    """
    config.validate()
    if not 0 <= rank < world_size:
        raise ScoringError(f"rank {rank} is not in 0..{world_size - 1}")
    device = pick_device(config.device)
    runtime = _Runtime(config, device, pick_dtype(device, config.dtype))
    report = ScoringReport(device=str(device), dtype=str(runtime.dtype).removeprefix("torch."),
                           rank=rank, world_size=world_size)
    try:
        plans = _plans(dataset, workspace, config, runtime, report, progress, cancel, rank)
        mine = np.arange(rank, dataset.pairs.num_rows, world_size)
        for plan in plans:
            _score_source(plan, dataset, workspace, config, mine, report, progress, cancel, rank)
    except Cancelled as stop:
        raise ScoringCancelled(stop.message, report) from stop
    return report


def _score_source(plan, dataset, workspace, config, mine, report, progress, cancel, rank) -> None:
    started = time.monotonic()
    store = ScoreStore(workspace.scores_dir, plan.source, plan.fingerprint)
    ids = dataset.pairs["pair_id"].combine_chunks()
    my_ids = ids.take(pa.array(mine))
    done = store.scored_ids()
    todo = np.array([i for i, pid in zip(mine, my_ids.to_pylist()) if pid not in done], dtype=np.int64)
    source_report = SourceReport(plan.source, plan.fingerprint, pairs=len(mine), reused=len(mine) - len(todo),
                                 models=dict(plan.meta["models"]))
    report.sources[plan.source] = source_report
    reporter = Reporter(plan.source, len(todo), progress, cancel, unit="pairs")
    reporter.check()
    if len(todo):
        store.write_meta(plan.meta)
    conversational = dataset.format == "conversational"
    for start in range(0, len(todo), config.checkpoint_every):
        indices = todo[start : start + config.checkpoint_every]
        rows = dataset.pairs.select(["prompt", "chosen", "rejected"]).take(pa.array(indices)).to_pydict()
        chunk = _Chunk(rows["prompt"], rows["chosen"], rows["rejected"], conversational)
        columns = plan.scorer(chunk, _pass_progress(progress, reporter, len(indices), started), cancel)
        store.append(pa.table({"pair_id": ids.take(pa.array(indices)), **columns}), rank=rank)
        source_report.scored += len(indices)
        source_report.seconds = time.monotonic() - started
        reporter.advance(len(indices))
    reporter.finish()
    _count_flags(source_report, store, my_ids)
    source_report.notes = list(plan.scorer.notes)
    source_report.seconds = time.monotonic() - started


def _pass_progress(progress: ProgressFn | None, reporter: Reporter, chunk_pairs: int, started: float) -> PassProgress:
    """Engine progress (sequences of one pass) turned into the source's progress in pairs."""
    def for_pass(index: int, passes: int) -> ProgressFn | None:
        if progress is None:
            return None

        def forward(inner: Progress) -> None:
            fraction = inner.done / inner.total if inner.total else 0.0
            done = reporter.done + int(chunk_pairs * (index + fraction) / passes)
            progress(Progress(reporter.stage, done, reporter.total, "pairs", "", time.monotonic() - started))
        return forward
    return for_pass


def _count_flags(source_report: SourceReport, store: ScoreStore, my_ids: pa.Array) -> None:
    """Truncated, skipped and token-identical pairs of this rank, from the table (reused pairs too)."""
    table = store.read()
    flags = {name: values_for(table, my_ids, name) == 1 for name in ("truncated", "skipped", "token_identical")}
    source_report.truncated = int((flags["truncated"] & ~flags["skipped"]).sum())
    source_report.skipped_truncated = int(flags["skipped"].sum())
    source_report.token_identical_ids = [my_ids[int(i)].as_py() for i in np.flatnonzero(flags["token_identical"])]
