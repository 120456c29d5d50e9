"""Scoring every pair of a dataset with the margin sources of docs/method.md: external, implicit, IFD.

What each source computes is in core.scoring.scorers (shared with the online rounds and the
evaluation judge); this module runs them over a dataset into score tables:

- external: m_ex = r(x, y_w) - r(x, y_l) with a sequence-classification reward model,
  on the text it was trained on (its chat template, for standard rows too unless
  `reward_template` is off).
- implicit: m_im = (log pi_1(y_w|x) - log pi_0(y_w|x)) - (log pi_1(y_l|x) - log pi_0(y_l|x)),
  sums over response tokens, on pi_0's tokens and template. pi_1 and pi_0 with different
  vocabularies are refused; different chat templates are a note in the report. Without
  a policy model, pi_1 is pi_0 after DPO on a seed set D0 (core.scoring.seed_policy), trained
  once per workspace and settings into ``WORKSPACE/models/seed-pi1-<fp>/``.
- ifd: under pi_0, IFD(y|x) = PPL(y|x) / PPL(y), PPL = exp(-sum / n); margin IFD_w - IFD_l.

Token limit, per source (core.scoring.config): `max_length`, or by default the context of
the source's models (the smallest), at most `MAX_LENGTH_CAP`; a pair longer than that is cut
as one (one context for chosen and rejected, core.models.logprobs) and counted, and the
count, share and limit land in the report and in the table's meta (``truncation``), which an
export's manifest carries.

Every source has its own score table (core.store.scores), named by a fingerprint of the
source, its models' fingerprints and every setting that changes numbers (token limit,
min_prompt_tokens, skip_truncated, dtype, reward_template; not batch size or device).
Pairs already in the table are reused; the rest are scored in checkpoints of
`checkpoint_every` pairs, each appended as one atomic part, so a killed run resumes where
its last checkpoint ended and appended rows cost only their own scoring. Checkpoints take
the pending pairs in dataset order, so a resumed run forms the same batches as an
uninterrupted one and ends with the same numbers.

Pairs are reported, never scored as signal, when chosen and rejected are the same
tokens after truncation (``token_identical``) or when `skip_truncated` skips an
over-long pair (``skipped``): both are stored with margin NaN, which selection treats
as unscored. Over-long pairs that are scored carry ``truncated``; pairs whose boundary
moved (core.models.logprobs) carry ``boundary_moved`` and are counted per run.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from core.data.loading import LoadedDataset
from core.errors import Cancelled
from core.models.load import (
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    model_fingerprint,
    pick_device,
    pick_dtype,
)
from core.progress import Progress, ProgressFn, Reporter
from core.scoring.config import ScoringConfig, ScoringError, digest, seed_config, source_limits
from core.scoring.scorers import (
    Limits,
    Pairs,
    PassProgress,
    RewardScorer,
    check_same_vocabulary,
    encoded_pairs,
    external_columns,
    ifd_columns,
    implicit_columns,
)
from core.scoring.seed_report import implicit_external_spearman
from core.store.scores import ScoreStore, values_for
from core.store.workspace import Workspace

if TYPE_CHECKING:
    from core.scoring.seed_policy import SeedPolicy

SCORER_VERSION = 2
"""Bump when a change here changes stored numbers: it enters every fingerprint.
2: token-exact (joint) encoding, one context per pair, reward-model templates on standard rows."""
MODEL_CACHE_SIZE = 4
"""Models and tokenizers kept loaded between `score` calls (reward, pi_0, pi_1, tokenizer)."""


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
    max_length: int | None = None
    """The token limit of this source (context + response)."""
    min_prompt_tokens: int | None = None
    """Context tokens a cut kept at least."""
    boundary_moved: int = 0
    """Pairs scored by this run whose prompt ids were not a prefix of the joint ids (core.models.logprobs)."""
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

    @property
    def truncated_share(self) -> float:
        """Share of this rank's pairs that were cut (or skipped) to fit the token limit."""
        return (self.truncated + self.skipped_truncated) / self.pairs if self.pairs else 0.0

    def truncation_summary(self) -> str:
        """One line for people: how many pairs were cut, and to what, e.g. for the Score tab."""
        cut = self.truncated + self.skipped_truncated
        how = "skipped" if self.skipped_truncated and not self.truncated else "cut"
        limit = "no limit" if self.max_length is None else f"{self.max_length:,} tokens"
        kept = (
            f" (context kept: at least {self.min_prompt_tokens:,})"
            if cut and self.min_prompt_tokens is not None
            else ""
        )
        return f"{cut:,} of {self.pairs:,} pairs ({100 * self.truncated_share:.1f}%) {how} to fit {limit}{kept}"

    def boundary_summary(self) -> str | None:
        """One line for people when pairs of this run had their response boundary moved back, else None."""
        if not self.boundary_moved:
            return None
        return (
            f"{self.boundary_moved:,} pairs had a token merging across the prompt/response boundary: "
            "it was scored with the response (as TRL does)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "token_identical": len(self.token_identical_ids),
            "truncated_share": round(self.truncated_share, 4),
            "truncation_summary": self.truncation_summary(),
            "boundary_summary": self.boundary_summary(),
            "pairs_per_s": None if self.pairs_per_s is None else round(self.pairs_per_s, 2),
        }


@dataclass
class ScoringReport:
    """Per source what was scored and reused; the seed policy when one was used."""

    sources: dict[str, SourceReport] = field(default_factory=dict)
    device: str = ""
    dtype: str = ""
    rank: int = 0
    world_size: int = 1
    seed_policy: dict[str, Any] | None = None
    implicit_external_spearman: float | None = None
    """Spearman of implicit against external margins over the pairs both score (this rank's)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "sources": {name: report.to_json() for name, report in self.sources.items()},
            "device": self.device,
            "dtype": self.dtype,
            "rank": self.rank,
            "world_size": self.world_size,
            "seed_policy": self.seed_policy,
            "implicit_external_spearman": self.implicit_external_spearman,
        }


class ScoringCancelled(Cancelled):
    """The cancel event stopped scoring; every checkpoint written is kept, `report` says how far it got."""

    def __init__(self, message: str, report: ScoringReport) -> None:
        super().__init__(message, "run the same command again to resume from the last checkpoint")
        self.report = report


# Models ---------------------------------------------------------------------------

_loaded: OrderedDict[tuple, Any] = OrderedDict()
_loaded_lock = threading.Lock()


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
            (
                kind,
                fingerprint,
                str(self.device),
                str(self.dtype),
                self.config.trust_remote_code,
                self.config.allow_pickle,
            ),
            lambda: load(
                path,
                device=self.device,
                dtype=self.dtype,
                trust_remote_code=self.config.trust_remote_code,
                allow_pickle=self.config.allow_pickle,
            ),
        )

    def tokenizer(self, path: str, fingerprint: str):
        return _cached(
            ("tokenizer", fingerprint, self.config.trust_remote_code),
            lambda: load_tokenizer(path, trust_remote_code=self.config.trust_remote_code),
        )

    def limits(self, *paths: str) -> Limits:
        return source_limits(self.config, paths)


# Scoring a chunk, per source --------------------------------------------------------


class _ExternalSource:
    """External margins with the reward model, loaded on first use and kept for the run."""

    def __init__(self, runtime: _Runtime, model: tuple[str, str], limits: Limits) -> None:
        self.runtime, self.model_ref, self.limits = runtime, model, limits
        self.reward: RewardScorer | None = None

    @property
    def notes(self) -> list[str]:
        return self.reward.notes if self.reward is not None else []

    def __call__(self, pairs: Pairs, pass_progress: PassProgress, cancel) -> dict[str, np.ndarray]:
        if self.reward is None:
            runtime = self.runtime
            self.reward = RewardScorer(
                runtime.model("reward", *self.model_ref),
                runtime.tokenizer(*self.model_ref),
                batch_tokens=runtime.config.batch_tokens,
                use_template=runtime.config.reward_template,
            )
        return external_columns(self.reward, pairs, self.limits, pass_progress, cancel)


class _ImplicitSource:
    """Implicit margins: pi_1 against pi_0, on pi_0's tokens.

    With a seed policy (core.scoring.seed_policy) each pair goes to the pi_1 that did not train
    on it (`SeedPolicy.route`); pairs routed to none (D0 under ``exclude``) are encoded for
    their flags only and get margin NaN and the flag ``seed_set``. A LoRA seed policy is
    one fresh copy of pi_0 carrying every adapter, unmerged (`adapter_views`).
    """

    def __init__(
        self,
        runtime: _Runtime,
        reference: tuple[str, str],
        policy: tuple[str, str],
        limits: Limits,
        notes: list[str],
        seed_policy: SeedPolicy | None = None,
    ) -> None:
        self.runtime, self.reference, self.policy, self.limits, self.notes = runtime, reference, policy, limits, notes
        self.seed_policy = seed_policy

    def _models(self) -> tuple[Any, list[Any]]:
        """pi_0 and the pi_1 models, in the order `SeedPolicy.route` numbers them."""
        runtime, seed = self.runtime, self.seed_policy
        if seed is None:
            return runtime.model("causal", *self.reference), [runtime.model("causal", *self.policy)]
        if not seed.lora:
            return runtime.model("causal", *self.reference), [
                runtime.model("causal", str(path), model_fingerprint(path)) for path in seed.models
            ]
        config = runtime.config
        from core.scoring.seed_policy import adapter_views

        key = ("seed-adapters", self.reference[1], self.policy[1], str(runtime.device), str(runtime.dtype))
        return _cached(
            key,
            lambda: adapter_views(
                load_causal_lm(
                    self.reference[0],
                    device=runtime.device,
                    dtype=runtime.dtype,
                    trust_remote_code=config.trust_remote_code,
                    allow_pickle=config.allow_pickle,
                ),
                seed.models,
            ),
        )

    def __call__(self, pairs: Pairs, pass_progress: PassProgress, cancel) -> dict[str, np.ndarray]:
        runtime = self.runtime
        tokenizer = runtime.tokenizer(*self.reference)
        reference, policies = self._models()
        if self.seed_policy is None:
            route = np.zeros(len(pairs), dtype=np.int64)
        else:
            assert pairs.pair_ids is not None, "core.scoring.run gives every chunk its pair_ids"
            route = self.seed_policy.route(pairs.pair_ids)
        groups = [(k, route == k) for k in range(len(policies)) if (route == k).any()]
        parts = []
        for g, (k, mask) in enumerate(groups):

            def group_progress(index, passes, g=g):  # each group's passes in turn on one bar
                return pass_progress(g * passes + index, passes * len(groups))

            parts.append(
                (
                    mask,
                    implicit_columns(
                        policies[k],
                        reference,
                        tokenizer,
                        pairs.subset(mask),
                        self.limits,
                        batch_tokens=runtime.config.batch_tokens,
                        pass_progress=group_progress,
                        cancel=cancel,
                    ),
                )
            )
        unrouted = route < 0
        if unrouted.any():  # D0 under exclude: its flags, no margin
            parts.append((unrouted, encoded_pairs(tokenizer, pairs.subset(unrouted), self.limits)[2]))
        columns = _stitch(parts, len(pairs))
        if self.seed_policy is not None and self.seed_policy.split == "exclude":
            columns["seed_set"] = unrouted
        return columns


def _stitch(parts: list[tuple[np.ndarray, dict[str, np.ndarray]]], n: int) -> dict[str, np.ndarray]:
    """Columns of disjoint row sets (boolean masks over `n` rows) put back in row order; a column a
    part lacks is NaN there (False for flags)."""
    names = dict.fromkeys(name for _, columns in parts for name in columns)
    out = {}
    for name in names:
        flag = next(columns[name].dtype == bool for _, columns in parts if name in columns)
        out[name] = np.zeros(n, dtype=bool) if flag else np.full(n, np.nan)
        for mask, columns in parts:
            if name in columns:
                out[name][mask] = columns[name]
    return out


class _IfdSource:
    """IFD margins under pi_0."""

    def __init__(self, runtime: _Runtime, reference: tuple[str, str], limits: Limits) -> None:
        self.runtime, self.reference, self.limits = runtime, reference, limits
        self.notes: list[str] = []

    def __call__(self, pairs: Pairs, pass_progress: PassProgress, cancel) -> dict[str, np.ndarray]:
        runtime = self.runtime
        return ifd_columns(
            runtime.model("causal", *self.reference),
            runtime.tokenizer(*self.reference),
            pairs,
            self.limits,
            batch_tokens=runtime.config.batch_tokens,
            pass_progress=pass_progress,
            cancel=cancel,
        )


# Fingerprints ---------------------------------------------------------------------------


def _settings(limits: Limits, dtype: torch.dtype) -> dict[str, Any]:
    """The settings that change numbers (batch size and device only move the last float bits)."""
    return {
        "max_length": limits.max_length,
        "min_prompt_tokens": limits.min_prompt_tokens,
        "skip_truncated": limits.skip_truncated,
        "dtype": str(dtype).removeprefix("torch."),
        "scorer_version": SCORER_VERSION,
    }


@dataclass
class _Plan:
    source: str
    fingerprint: str
    meta: dict[str, Any]
    scorer: _ExternalSource | _ImplicitSource | _IfdSource
    limits: Limits


def _plans(dataset, workspace, config, runtime, report, progress, cancel, rank) -> list[_Plan]:
    from core.scoring.seed_policy import ensure_seed_policy, seed_policy_dir

    fingerprints = {}
    if config.reward_model and "external" in config.sources:
        fingerprints["reward"] = model_fingerprint(config.reward_model)
    if config.reference_model and {"implicit", "ifd"} & set(config.sources):
        fingerprints["reference"] = model_fingerprint(config.reference_model)
    policy, seed_policy = config.policy_model, None
    if "implicit" in config.sources:
        if policy is None:
            trained = seed_config(config)
            seed_dir = seed_policy_dir(workspace, trained, fingerprints["reference"])
            if rank != 0 and not (seed_dir / "seed.json").is_file():
                raise ScoringError(
                    f"the seed policy pi_1 is not made yet ({seed_dir}); in a sharded run only rank 0 trains it",
                    "run rank 0 first (under torchrun or accelerate launch the other ranks wait for it), "
                    "or pass --policy-model",
                )
            seed_policy, report.seed_policy = ensure_seed_policy(
                dataset, workspace, trained, fingerprints["reference"], progress=progress, cancel=cancel
            )
            policy, fingerprints["policy"] = str(seed_policy.root), seed_policy.fingerprint()
        else:
            fingerprints["policy"] = model_fingerprint(policy)
    paths = {"reward": config.reward_model, "reference": config.reference_model, "policy": policy}
    uses = {"external": ("reward",), "implicit": ("policy", "reference"), "ifd": ("reference",)}
    plans = []
    for source in config.sources:
        models = {role: paths[role] for role in uses[source]}
        model_fps = {role: fingerprints[role] for role in uses[source]}
        limits = runtime.limits(*models.values())
        settings = _settings(limits, runtime.dtype)
        scorer: _ExternalSource | _ImplicitSource | _IfdSource
        if source == "external":
            reward = _model_of("reward", paths, fingerprints)
            settings["reward_template"] = bool(
                config.reward_template and getattr(runtime.tokenizer(*reward), "chat_template", None) is not None
            )
            scorer = _ExternalSource(runtime, reward, limits)
        elif source == "implicit":
            reference = _model_of("reference", paths, fingerprints)
            notes = (
                []
                if seed_policy is not None
                else check_same_vocabulary(  # a seed pi_1 is pi_0 trained here
                    runtime.tokenizer(policy, fingerprints["policy"]),
                    runtime.tokenizer(*reference),
                    policy,
                    paths["reference"],
                )
            )
            scorer = _ImplicitSource(runtime, reference, (policy, fingerprints["policy"]), limits, notes, seed_policy)
        else:
            scorer = _IfdSource(runtime, _model_of("reference", paths, fingerprints), limits)
        fingerprint = digest({"source": source, "models": model_fps, "settings": settings})
        meta = {"models": models, "model_fingerprints": model_fps, "settings": settings, "format": dataset.format}
        plans.append(_Plan(source, fingerprint, meta, scorer, limits))
    return plans


def _model_of(role: str, paths: dict[str, str | None], fingerprints: dict[str, str]) -> tuple[str, str]:
    """The `role` model a validated config names for a source that needs it, and its fingerprint."""
    path = paths[role]
    assert path is not None, f"ScoringConfig.validate makes sure of the {role} model"
    return path, fingerprints[role]


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
    report = ScoringReport(
        device=str(device), dtype=str(runtime.dtype).removeprefix("torch."), rank=rank, world_size=world_size
    )
    try:
        plans = _plans(dataset, workspace, config, runtime, report, progress, cancel, rank)
        mine = np.arange(rank, dataset.pairs.num_rows, world_size)
        for plan in plans:
            _score_source(plan, dataset, workspace, config, mine, report, progress, cancel, rank, world_size)
    except Cancelled as stop:
        raise ScoringCancelled(stop.message, report) from stop
    report.implicit_external_spearman = _implicit_external_spearman(plans, workspace, dataset, mine)
    return report


def _implicit_external_spearman(plans, workspace, dataset, mine) -> float | None:
    """How much the two judges agree, over this rank's pairs."""
    stores = {plan.source: ScoreStore(workspace.scores_dir, plan.source, plan.fingerprint) for plan in plans}
    if not {"implicit", "external"} <= set(stores):
        return None
    my_ids = dataset.pairs["pair_id"].combine_chunks().take(pa.array(mine))
    implicit, external = (values_for(stores[name].read(), my_ids, "margin") for name in ("implicit", "external"))
    return implicit_external_spearman(implicit, external)


def _score_source(plan, dataset, workspace, config, mine, report, progress, cancel, rank, world_size) -> None:
    started = time.monotonic()
    store = ScoreStore(workspace.scores_dir, plan.source, plan.fingerprint)
    ids = dataset.pairs["pair_id"].combine_chunks()
    my_ids = ids.take(pa.array(mine))
    done = store.scored_ids()
    todo = np.array([i for i, pid in zip(mine, my_ids.to_pylist()) if pid not in done], dtype=np.int64)
    source_report = SourceReport(
        plan.source,
        plan.fingerprint,
        pairs=len(mine),
        reused=len(mine) - len(todo),
        max_length=plan.limits.max_length,
        min_prompt_tokens=plan.limits.min_prompt_tokens,
        models=dict(plan.meta["models"]),
    )
    report.sources[plan.source] = source_report
    reporter = Reporter(plan.source, len(todo), progress, cancel, unit="pairs")
    reporter.check()
    if len(todo):
        store.write_meta(plan.meta)
    conversational = dataset.format == "conversational"
    for start in range(0, len(todo), config.checkpoint_every):
        indices = todo[start : start + config.checkpoint_every]
        rows = dataset.pairs.select(["prompt", "chosen", "rejected"]).take(pa.array(indices)).to_pydict()
        chunk_ids = ids.take(pa.array(indices))
        chunk = Pairs(rows["prompt"], rows["chosen"], rows["rejected"], conversational, chunk_ids.to_pylist())
        columns = plan.scorer(chunk, _pass_progress(progress, reporter, len(indices), started), cancel)
        store.append(pa.table({"pair_id": chunk_ids, **columns}), rank=rank)
        source_report.boundary_moved += int(columns["boundary_moved"].sum())
        source_report.scored += len(indices)
        source_report.seconds = time.monotonic() - started
        reporter.advance(len(indices))
    reporter.finish()
    _count_flags(source_report, store, my_ids)
    if world_size == 1:  # a sharded run's tables are counted once merged (core.scoring.distributed)
        record_truncation(store, ids)
    source_report.notes = list(plan.scorer.notes)
    source_report.seconds = time.monotonic() - started


def record_truncation(store: ScoreStore, pair_ids: pa.Array) -> dict[str, Any]:
    """Write into the table's meta how many of `pair_ids` (the dataset's pairs) were cut to fit, and
    under which limit, so the manifest of an export that uses these scores says so. A table whose
    record is already right is left untouched (a fully reused source writes nothing)."""
    table = store.read()
    flags = {name: values_for(table, pair_ids, name) == 1 for name in ("truncated", "skipped", "token_identical")}
    meta = store.read_meta()
    recorded = meta.get("truncation")
    settings = meta.get("settings", {})
    n = len(pair_ids)
    meta["truncation"] = {
        "pairs": n,
        "truncated": int(flags["truncated"].sum()),
        "share": round(float(flags["truncated"].sum()) / n, 4) if n else 0.0,
        "skipped": int(flags["skipped"].sum()),
        "token_identical": int(flags["token_identical"].sum()),
        "max_length": settings.get("max_length"),
        "min_prompt_tokens": settings.get("min_prompt_tokens"),
    }
    if meta["truncation"] != recorded:
        store.write_meta({k: v for k, v in meta.items() if k not in ("source", "fingerprint", "updated_at")})
    return meta["truncation"]


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
