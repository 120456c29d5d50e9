"""Iterative (online) DPO-DM: generate, score, pair, select by DM-MUL, train; repeat.

Each round r of `iterate(config, out_dir)` (docs/method.md, "Iterative (online) DPO-DM"):

1. generate: draw `prompts_per_round` prompts and sample `responses_per_prompt` responses
   to each from the CURRENT policy (pi_0 in round 0), with core.generation.evaluation's sampler on
   the `generation_backend` (core.generation.backends: vLLM when installed and a GPU is
   present, else transformers, unless one is named).
2. score: every response's reward from the reward model (the text it was trained on:
   prompt and response through the reward model's chat template): core.scoring.scorers'
   `RewardScorer`, the one path external margins are scored by.
3. select: per prompt, best-of-N is chosen and worst-of-N rejected (prompts whose
   responses all earn the same reward are skipped); external margin = the reward
   difference, implicit margin = (log pi(y_w|x) - log pi_0(y_w|x)) - (log pi(y_l|x) -
   log pi_0(y_l|x)) of the current policy against pi_0 (core.scoring.scorers.implicit_columns, as
   `dmtui score` computes it); keep the top
   `keep_fraction` by DM-MUL (core.selection.selector.select). In round 0 the policy is pi_0, so
   every implicit margin is exactly 0 and carries no signal: that round ranks by the
   external margin alone (the manifest's ``sources`` says so).
4. train: one epoch of DPO from the current policy on the kept pairs, pi_0 as reference
   (core.training.trainer.train). Its final/ model is the next round's policy.

``keep_fraction=1.0`` is plain iterative DPO (every pair is kept).

Models: generation and scoring run on `device` in `dtype` (core.models.load.LoadedModels); each
model is loaded once per round (the policy samples and then scores implicit margins) and
released once no later stage needs it, before training loads its own.

Prompts. Real users pass `prompts_file`: a JSONL file with a ``"prompt"`` string per line;
round r takes the next `prompts_per_round` prompts of it, wrapping around. Without it the
caller gives `iterate` a prompt source (`RoundPrompts`); `dmtui iterate` gives the demo
world's (core.demo.oracle.online_prompts). A caller may also give a `judge` (core.generation.
evaluation.Judge) whose reward of every generation is recorded beside the reward model's as
``oracle_reward`` (the demo oracle's in `dmtui iterate` without a prompts file: is the policy
getting better?). The engine itself knows no demo.

Layout of `out_dir`::

    state.json                 config, per-round stages done and policies (atomic, after every stage)
    round-<r>/generation.json     the backend that sampled, its library versions, seed
    round-<r>/generations.jsonl   prompt_index, sample, prompt, response, tokens
    round-<r>/rewards.jsonl       reward (and the judge's oracle_reward, when one is given) per generation
    round-<r>/pairs.jsonl         per pair: ids, texts, rewards, margins, dm score, selected
    round-<r>/manifest.json       config, counts, selected pair ids, resolved M2, training outcome
    round-<r>/run.json, metrics.jsonl, checkpoints/, final/   the round's training run

Resume. `state.json` records the stages done per round; with ``resume=True`` a stage that
is recorded done and whose output exists is not run again, so a killed run continues at
the round and stage where it stopped (a training run cut mid-way continues from its last
checkpoint, or starts over when it has none).

Moving a run. Every path inside the run folder is written relative to it (state.json's
``policy_in``/``policy_out``, the manifests' ``policy_in`` and ``training.final``, e.g.
``round-0/final``), and the loop finds round r's policy at ``<out_dir>/round-<r-1>/final``
of the folder it is given, so a run folder can be moved or copied to another machine and
resumed there. Paths outside it (pi_0, the reward model, the prompts file) are kept as
given and must name the same models where the run resumes. A state.json written before
this (version 1, absolute paths) is rewritten in that form on resume; the absolute
paths in it are not read.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from core.defaults import DEFAULT_BATCH_TOKENS
from core.errors import DmtuiError
from core.generation.backends import GENERATION_BACKENDS, resolve_backend
from core.generation.evaluation import Judge, generate_responses, read_prompts_file
from core.progress import ProgressFn

if TYPE_CHECKING:  # torch-heavy: imported where a round runs, so `dmtui --help` stays instant
    from core.models.load import LoadedModels
    from core.scoring.scorers import Limits

STAGES = ("generate", "score", "select", "train")
STATE_JSON = "state.json"
STATE_VERSION = 2
"""2: paths inside the run folder are relative to it (1 stored them as given)."""
GENERATIONS, REWARDS, PAIRS, MANIFEST = "generations.jsonl", "rewards.jsonl", "pairs.jsonl", "manifest.json"
GENERATION_JSON, FINAL = "generation.json", "final"
STAGE_OUTPUT = {"generate": GENERATIONS, "score": REWARDS, "select": MANIFEST, "train": FINAL}
_NO_PROMPTS = "no prompts to sample from: no prompts file and no prompt source"
_NO_PROMPTS_HINT = 'pass --prompts-file (a JSONL file with a "prompt" string per line)'

RoundPrompts = Callable[[int, int, int], list[str]]
"""A prompt source for runs without `prompts_file`: (n, seed, round) -> that round's n prompts.
It must give the same prompts for the same arguments, so a resumed run samples what it would have."""


class IterationError(DmtuiError):
    """An iterative run that cannot start or continue as asked."""


@dataclass
class IterateConfig:
    """Everything an iterative DPO-DM run depends on; defaults follow the paper where it says."""

    policy: str | None = None
    """pi_0: the SFT model every round's implicit margins and DPO are measured against, and round 0's policy."""
    reward_model: str | None = None
    """Sequence-classification reward model (num_labels 1) scoring every response."""
    rounds: int = 3
    """Rounds of generate -> score -> select -> train (the paper: 3)."""
    prompts_per_round: int = 256
    """Prompts drawn per round (the paper: 20,000)."""
    prompts_file: str | None = None
    """JSONL with a "prompt" string per line; None: the prompt source given to `iterate` (`RoundPrompts`)."""
    responses_per_prompt: int = 5
    """N responses sampled per prompt; best-of-N vs worst-of-N makes the pair (the paper: 5)."""
    temperature: float = 0.7
    """Sampling temperature (the paper: 0.7)."""
    max_new_tokens: int = 64
    """Longest generated response in tokens."""
    keep_fraction: float = 0.25
    """Share of each round's pairs kept by DM-MUL (the paper: 25%); 1.0 is plain iterative DPO."""
    m1: float = -2.0
    """DM-MUL lower clip M1 (core.selection.selector's default)."""
    m2: float | Literal["auto"] = "auto"
    """DM-MUL upper clip M2: a number or 'auto' (core.selection.fusion.auto_m2 per round, per source)."""
    beta: float = 0.1
    """DPO beta."""
    lr: float = 5e-7
    """DPO peak learning rate (the paper's for 8B models; the tiny demo models want ~1e-4 or more)."""
    epochs: float = 1.0
    """DPO passes over each round's kept pairs (the paper: one)."""
    batch_size: int = 32
    """DPO global batch in pairs."""
    per_device_batch_size: int = 4
    """Most pairs per forward pass in DPO."""
    max_steps: int | None = None
    """Stop each round's DPO after this many optimiser steps (overrides epochs; for tests and smoke runs)."""
    max_length: int | None = 1024
    """Longest prompt + response in tokens for scoring and DPO."""
    gradient_checkpointing: bool = True
    """Recompute activations in DPO's backward pass to save memory."""
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    """Padded tokens per forward pass when scoring."""
    generation_batch_size: int = 256
    """Sequences per generate() call with transformers (part of the sampling seed's promise)."""
    generation_backend: str = "auto"
    """auto, transformers or vllm (core.generation.backends); auto is vLLM when installed and a GPU is present."""
    device: str = "auto"
    """Where generation and scoring run: auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, ..."""
    dtype: str = "auto"
    """Their precision: auto (bf16/fp16 on cuda, fp32 elsewhere), float32, bfloat16 or float16."""
    seed: int = 0
    """Seed of prompts, sampling (seed * 1000 + round), DPO and selection tie-breaks."""

    def validate(self) -> None:
        if not self.policy:
            raise IterationError("no policy (pi_0) to start from", "pass --policy MODEL, or --demo")
        if not self.reward_model:
            raise IterationError("no reward model to score responses", "pass --reward-model MODEL, or --demo")
        if self.rounds < 1 or self.prompts_per_round < 1 or self.max_new_tokens < 1:
            raise IterationError("rounds, prompts per round and max_new_tokens must be at least 1")
        if self.responses_per_prompt < 2:
            raise IterationError(
                f"best-of-N against worst-of-N needs N >= 2 responses per prompt, not {self.responses_per_prompt}"
            )
        if not 0.0 < self.keep_fraction <= 1.0:
            raise IterationError(
                f"keep fraction {self.keep_fraction} is not in (0, 1]",
                "0.25 keeps a quarter of each round's pairs; 1.0 is plain iterative DPO",
            )
        if not self.temperature > 0:
            raise IterationError(f"temperature must be above 0, not {self.temperature}")
        if self.generation_backend not in GENERATION_BACKENDS:
            raise IterationError(
                f"unknown generation backend {self.generation_backend!r}",
                f"choose one of {', '.join(GENERATION_BACKENDS)}",
            )
        if self.m2 != "auto" and not isinstance(self.m2, (int, float)):
            raise IterationError(f"M2 must be a number or 'auto', not {self.m2!r}")
        if self.prompts_file is not None and not Path(self.prompts_file).is_file():
            raise IterationError(
                f"prompts file not found: {self.prompts_file}", 'pass a JSONL file with a "prompt" string per line'
            )


@dataclass
class RoundReport:
    round: int
    policy_in: str
    policy_out: str | None
    prompts: int
    generations: int
    pairs: int
    tied_prompts: int
    """Prompts skipped because all their responses earned the same reward."""
    selected: int
    sources: list[str]
    m2: dict[str, float]
    mean_reward: float
    mean_chars: float
    mean_oracle_reward: float | None
    train_steps: int | None
    generation_backend: str
    """The backend that sampled the round's responses: transformers or vllm."""
    resumed_stages: list[str] = field(default_factory=list)
    """Stages found done on disk and not run again."""


@dataclass
class IterateReport:
    out_dir: str
    final_policy: str
    rounds: list[RoundReport]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# State ----------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    from core.io.atomic import atomic_write_json

    atomic_write_json(path, data)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    from core.io.atomic import atomic_write_bytes

    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


RESUME_MAY_CHANGE = ("rounds", "generation_backend", "device", "dtype")
"""Settings a resumed run may change: rounds (a finished run can be extended), the backend, device
and dtype (a run moved to a GPU machine may sample on vLLM in bf16; each round records what it used)."""


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """Settings that must match to resume."""
    return {k: v for k, v in config.items() if k not in RESUME_MAY_CHANGE}


def _load_state(out_dir: Path, config: IterateConfig, resume: bool) -> dict[str, Any]:
    path = out_dir / STATE_JSON
    if not path.exists():
        if out_dir.exists() and any(out_dir.iterdir()):
            raise IterationError(
                f"{out_dir} is not empty and holds no iterative run", "choose an empty or new --out folder"
            )
        return {"version": STATE_VERSION, "config": asdict(config), "rounds": []}
    if not resume:
        raise IterationError(
            f"{out_dir} already holds an iterative run", "continue it with --resume, or choose another --out folder"
        )
    try:
        state = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IterationError(f"{path}: cannot read the run state ({error})") from None
    stored, wanted = _comparable(state.get("config", {})), _comparable(asdict(config))
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if changed:
        raise IterationError(
            f"{out_dir} was started with other settings: {', '.join(changed)}",
            "resume with the same settings (only --rounds and --generation-backend may change), or use another --out",
        )
    state["config"] = asdict(config)
    state["version"] = STATE_VERSION
    for entry in state["rounds"]:  # version 1 held these as absolute paths of wherever the run was
        entry["policy_in"] = _policy_in(config, entry["round"])
        entry["policy_out"] = _policy_out(entry["round"]) if "train" in entry["done"] else None
    return state


def _policy_in(config: IterateConfig, r: int) -> str:
    """Round r's policy as state.json and the manifest write it: pi_0 as given, else relative to the run folder."""
    return str(config.policy) if r == 0 else _policy_out(r - 1)


def _policy_out(r: int) -> str:
    return f"round-{r}/{FINAL}"


def _policy_path(out_dir: Path, config: IterateConfig, r: int) -> str:
    """Round r's policy, resolved against the run folder as it is now."""
    return str(config.policy) if r == 0 else str(out_dir / _policy_out(r - 1))


def _round_state(state: dict[str, Any], config: IterateConfig, r: int) -> dict[str, Any]:
    while len(state["rounds"]) <= r:
        state["rounds"].append(
            {
                "round": len(state["rounds"]),
                "policy_in": _policy_in(config, len(state["rounds"])),
                "done": [],
                "policy_out": None,
            }
        )
    return state["rounds"][r]


def _is_done(entry: dict[str, Any], stage: str, round_dir: Path) -> bool:
    return stage in entry["done"] and (round_dir / STAGE_OUTPUT[stage]).exists()


# Stages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Inputs:
    """What the caller gives a run besides its config: the prompt source and the judge (see the module doc)."""

    prompts: RoundPrompts | None = None
    judge: Judge | None = None


def round_prompts(config: IterateConfig, r: int, prompts: RoundPrompts | None = None) -> list[str]:
    """Round r's prompts: the next slice of `prompts_file`, or else `prompts`' for (seed, round)."""
    n = config.prompts_per_round
    if config.prompts_file is None:
        if prompts is None:
            raise IterationError(_NO_PROMPTS, _NO_PROMPTS_HINT)
        return prompts(n, config.seed, r)
    prompts_of_file = read_prompts_file(config.prompts_file)
    start = r * n
    return [prompts_of_file[(start + i) % len(prompts_of_file)] for i in range(n)]


def _generate_stage(
    config: IterateConfig, r: int, policy: str, round_dir: Path, models: LoadedModels, inputs: _Inputs, progress, cancel
) -> None:
    from core.io.versions import library_versions

    prompts = round_prompts(config, r, inputs.prompts)
    seed = config.seed * 1000 + r
    out = generate_responses(
        policy,
        prompts,
        samples_per_prompt=config.responses_per_prompt,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        seed=seed,
        batch_size=config.generation_batch_size,
        backend=config.generation_backend,
        models=models,
        progress=progress,
        cancel=cancel,
    )
    _write_json(
        round_dir / GENERATION_JSON,
        {
            "backend": out.backend,
            "requested_backend": config.generation_backend,
            "seed": seed,
            "device": str(models.device),
            "dtype": str(models.dtype).removeprefix("torch."),
            "library_versions": library_versions(
                ["torch", "transformers", *(["vllm"] if out.backend == "vllm" else [])]
            ),
        },
    )
    k = config.responses_per_prompt
    records = [
        {"prompt_index": i // k, "sample": i % k, "prompt": prompts[i // k], "response": text, "tokens": tokens}
        for i, (text, tokens) in enumerate(zip(out.texts, out.token_counts))
    ]
    _write_jsonl(round_dir / GENERATIONS, records)


def _chat(prompts: list[str], responses: list[str]) -> tuple[list, list]:
    return (
        [[{"role": "user", "content": p}] for p in prompts],
        [[{"role": "assistant", "content": r}] for r in responses],
    )


def _limits(config: IterateConfig, *paths: str) -> Limits:
    """`config.max_length` capped by the context of the models that read the text."""
    from core.models.load import model_context_length
    from core.scoring.scorers import Limits

    contexts = [n for n in (model_context_length(path) for path in paths) if n]
    return Limits(min([config.max_length, *contexts]) if config.max_length else min(contexts, default=None))


def _score_stage(
    config: IterateConfig, r: int, policy: str, round_dir: Path, models: LoadedModels, inputs: _Inputs, progress, cancel
) -> None:
    from core.scoring.scorers import RewardScorer

    generations = _read_jsonl(round_dir / GENERATIONS)
    prompts = [g["prompt"] for g in generations]
    responses = [g["response"] for g in generations]
    reward_model = config.reward_model
    assert reward_model is not None, "IterateConfig.validate requires a reward model"
    reward = RewardScorer(
        models.reward_model(reward_model), models.tokenizer(reward_model), batch_tokens=config.batch_tokens
    )
    rewards = reward.item_rewards(
        *_chat(prompts, responses),
        conversational=True,
        limits=_limits(config, reward_model),
        progress=progress,
        cancel=cancel,
    )
    models.release(reward_model)
    oracle = None if inputs.judge is None else inputs.judge.rewards(prompts, responses)
    records = [
        {
            "prompt_index": g["prompt_index"],
            "sample": g["sample"],
            "reward": float(rewards[i]),
            **({"oracle_reward": float(oracle[i])} if oracle is not None else {}),
        }
        for i, g in enumerate(generations)
    ]
    _write_jsonl(round_dir / REWARDS, records)


def best_worst_pairs(generations: list[dict[str, Any]], rewards: list[float]) -> tuple[list[dict[str, Any]], int]:
    """Per prompt, best-of-N (chosen) against worst-of-N (rejected); prompts with all rewards tied are skipped.

    >>> gens = [{"prompt_index": 0, "prompt": "p", "response": t} for t in "abc"]
    >>> pairs, tied = best_worst_pairs(gens, [0.5, 2.0, -1.0])
    >>> (pairs[0]["chosen"], pairs[0]["rejected"], pairs[0]["reward_margin"], tied)
    ('b', 'c', 3.0, 0)
    """
    by_prompt: dict[int, list[int]] = {}
    for i, g in enumerate(generations):
        by_prompt.setdefault(g["prompt_index"], []).append(i)
    pairs, tied = [], 0
    for prompt_index, items in sorted(by_prompt.items()):
        values = [rewards[i] for i in items]
        best, worst = items[int(np.argmax(values))], items[int(np.argmin(values))]
        if rewards[best] == rewards[worst]:
            tied += 1
            continue
        pairs.append(
            {
                "prompt_index": prompt_index,
                "prompt": generations[best]["prompt"],
                "chosen": generations[best]["response"],
                "rejected": generations[worst]["response"],
                "chosen_sample": generations[best].get("sample"),
                "rejected_sample": generations[worst].get("sample"),
                "reward_chosen": rewards[best],
                "reward_rejected": rewards[worst],
                "reward_margin": rewards[best] - rewards[worst],
            }
        )
    return pairs, tied


def implicit_margins(
    policy: str,
    reference: str,
    pairs: list[dict[str, Any]],
    models: LoadedModels,
    limits: Limits,
    *,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """(log pi(y_w|x) - log pi_0(y_w|x)) - (log pi(y_l|x) - log pi_0(y_l|x)) per pair: core.scoring.scorers'
    implicit margin, on pi_0's tokens. Exactly 0 without a forward pass when `policy` is `reference` (round 0)."""
    if not pairs:
        return np.zeros(0)
    if Path(policy).resolve() == Path(reference).resolve():
        return np.zeros(len(pairs))
    from core.scoring.scorers import Pairs, implicit_columns

    prompts, chosen = _chat([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    _, rejected = _chat([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    columns = implicit_columns(
        models.causal_lm(policy),
        models.causal_lm(reference),
        models.tokenizer(reference),
        Pairs(prompts, chosen, rejected, conversational=True),
        limits,
        batch_tokens=batch_tokens,
        pass_progress=lambda index, passes: progress,
        cancel=cancel,
    )
    return columns["margin"]


def _select_stage(
    config: IterateConfig, r: int, policy: str, round_dir: Path, models: LoadedModels, inputs: _Inputs, progress, cancel
) -> None:
    from core.data.pairs import pair_id
    from core.selection.selector import SelectionParams, select, tie_keys_from_pair_ids

    generations = _read_jsonl(round_dir / GENERATIONS)
    reward_records = _read_jsonl(round_dir / REWARDS)
    rewards = [rec["reward"] for rec in reward_records]
    pairs, tied = best_worst_pairs(generations, rewards)
    assert config.policy is not None, "IterateConfig.validate requires pi_0"
    implicit = implicit_margins(
        policy,
        config.policy,
        pairs,
        models,
        _limits(config, policy, config.policy),
        batch_tokens=config.batch_tokens,
        progress=progress,
        cancel=cancel,
    )
    models.release()
    external = np.array([p["reward_margin"] for p in pairs], dtype=np.float64)
    ids = [pair_id(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]
    notes = []
    if pairs and np.all(implicit == 0):
        sources: tuple[str, ...] = ("external",)
        notes.append("every implicit margin is 0 (the policy is pi_0): ranked by the external margin alone")
    else:
        sources = ("external", "implicit")
    selected_mask = np.zeros(len(pairs), dtype=bool)
    score = np.full(len(pairs), np.nan)
    m2: dict[str, float] = {}
    if pairs:
        params = SelectionParams(
            mode="dm-mul",
            budget=float(config.keep_fraction),
            sources=sources,
            m1=config.m1,
            m2=config.m2,
            seed=config.seed,
        )
        selection = select({"external": external, "implicit": implicit}, params, tie_break=tie_keys_from_pair_ids(ids))
        selected_mask = selection.mask
        score = selection.score if selection.score is not None else score
        m2 = {source: bounds.m2 for source, bounds in selection.bounds.items()}
        notes.extend(selection.notes)
    records = [
        {
            "pair_index": i,
            "pair_id": ids[i],
            **pair,
            "implicit_margin": float(implicit[i]),
            "dm_score": None if not math.isfinite(score[i]) else float(score[i]),
            "selected": bool(selected_mask[i]),
        }
        for i, pair in enumerate(pairs)
    ]
    _write_jsonl(round_dir / PAIRS, records)
    oracle = [rec["oracle_reward"] for rec in reward_records if "oracle_reward" in rec]
    generation_record = round_dir / GENERATION_JSON
    generation = (
        json.loads(generation_record.read_text("utf-8")) if generation_record.exists() else {"backend": "transformers"}
    )  # generated before backends were recorded: transformers
    _write_json(
        round_dir / MANIFEST,
        {
            "round": r,
            "policy_in": _policy_in(config, r),
            "reference": config.policy,
            "config": asdict(config),
            "generation": generation,
            "counts": {
                "prompts": config.prompts_per_round,
                "generations": len(generations),
                "pairs": len(pairs),
                "tied_prompts": tied,
                "selected": int(selected_mask.sum()),
            },
            "selection": {
                "mode": "dm-mul",
                "keep_fraction": config.keep_fraction,
                "sources": list(sources),
                "m1": config.m1,
                "m2_requested": config.m2,
                "m2": m2,
                "notes": notes,
            },
            "selected_pair_ids": [ids[i] for i in np.flatnonzero(selected_mask)],
            "generation_stats": {
                "mean_reward": float(np.mean(rewards)) if rewards else math.nan,
                "mean_chars": float(np.mean([len(g["response"]) for g in generations])) if generations else math.nan,
                "mean_oracle_reward": float(np.mean(oracle)) if oracle else None,
            },
            "training": None,
        },
    )


def _train_stage(
    config: IterateConfig, r: int, policy: str, round_dir: Path, models: LoadedModels, inputs: _Inputs, progress, cancel
) -> None:
    from core.training.trainer import RUN_JSON, TrainConfig, train

    models.release()  # training loads its own copies (TRL)
    kept = [
        {
            "prompt": [{"role": "user", "content": p["prompt"]}],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
        }
        for p in _read_jsonl(round_dir / PAIRS)
        if p["selected"]
    ]
    manifest = json.loads((round_dir / MANIFEST).read_text("utf-8"))
    if not kept:
        raise IterationError(
            f"round {r}: no pair to train on ({manifest['counts']['pairs']} pairs, "
            f"{manifest['counts']['tied_prompts']} prompts with all rewards tied)",
            "draw more prompts or responses per prompt, or raise --keep",
        )
    # A training run cut short continues from its latest finished checkpoint, or starts over
    # when it had none (core.training.trainer decides).
    resume_from = "latest" if (round_dir / RUN_JSON).exists() else None
    train_config = TrainConfig(
        model=policy,
        ref_model=config.policy,
        loss="dpo",
        beta=config.beta,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        per_device_batch_size=config.per_device_batch_size,
        max_length=config.max_length,
        seed=config.seed + r,
        gradient_checkpointing=config.gradient_checkpointing,
        max_steps=config.max_steps,
        save_total_limit=1,
        resume_from=resume_from,
        logging_steps=1 if config.max_steps and config.max_steps <= 20 else 10,
    )
    result = train(train_config, kept, round_dir, metrics_sink=lambda record: None, progress=progress, cancel=cancel)
    manifest["training"] = {
        "pairs": len(kept),
        "steps": result.steps,
        "final": _policy_out(r),
        "summary": result.summary,
        "metrics": "metrics.jsonl",
    }
    _write_json(round_dir / MANIFEST, manifest)


_STAGE_FUNCTIONS = {"generate": _generate_stage, "score": _score_stage, "select": _select_stage, "train": _train_stage}


# The loop ---------------------------------------------------------------------------------


def _round_progress(progress: ProgressFn | None, r: int) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda report: progress(replace(report, stage=f"r{r} {report.stage}"))


def iterate(
    config: IterateConfig,
    out_dir: str | Path,
    *,
    prompts: RoundPrompts | None = None,
    judge: Judge | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> IterateReport:
    """Run `config.rounds` rounds of online DPO-DM into `out_dir` (see the module doc).

    Without `config.prompts_file`, `prompts` gives each round's prompts; `judge`, when given,
    rewards every generation beside the reward model (``oracle_reward``). A folder that already
    holds a run is refused unless `resume`; resuming needs the same settings (only `rounds` and
    `generation_backend` may change), and the same prompt source, and skips every stage recorded
    done. The folder may have moved since the run started.
    """
    from core.models.load import LoadedModels, pick_device

    config.validate()
    # asked for vLLM where it cannot run: say so before writing anything
    resolve_backend(config.generation_backend, pick_device(config.device))
    if config.prompts_file is None and prompts is None:
        raise IterationError(_NO_PROMPTS, _NO_PROMPTS_HINT)
    inputs = _Inputs(prompts, judge)
    out_dir = Path(out_dir)
    state = _load_state(out_dir, config, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / STATE_JSON, state)
    reports = []
    for r in range(config.rounds):
        round_dir = out_dir / f"round-{r}"
        round_dir.mkdir(exist_ok=True)
        entry = _round_state(state, config, r)
        policy = _policy_path(out_dir, config, r)
        models = LoadedModels(config.device, config.dtype)  # each model loaded once per round
        resumed = []
        for stage in STAGES:
            if _is_done(entry, stage, round_dir):
                resumed.append(stage)
                continue
            if stage in entry["done"]:
                entry["done"] = entry["done"][: entry["done"].index(stage)]  # its output is gone: redo from here
            _STAGE_FUNCTIONS[stage](config, r, policy, round_dir, models, inputs, _round_progress(progress, r), cancel)
            entry["done"].append(stage)
            if stage == "train":
                entry["policy_out"] = _policy_out(r)
            _write_json(out_dir / STATE_JSON, state)
        models.release()
        reports.append(_round_report(r, policy, round_dir, resumed))
    state["finished_rounds"] = config.rounds
    _write_json(out_dir / STATE_JSON, state)
    return IterateReport(str(out_dir), _policy_path(out_dir, config, config.rounds), reports)


def _round_report(r: int, policy: str, round_dir: Path, resumed: list[str]) -> RoundReport:
    manifest = json.loads((round_dir / MANIFEST).read_text("utf-8"))
    counts, stats, training = manifest["counts"], manifest["generation_stats"], manifest.get("training") or {}
    return RoundReport(
        round=r,
        policy_in=policy,
        policy_out=str(round_dir / FINAL),
        prompts=counts["prompts"],
        generations=counts["generations"],
        pairs=counts["pairs"],
        tied_prompts=counts["tied_prompts"],
        selected=counts["selected"],
        sources=manifest["selection"]["sources"],
        m2=manifest["selection"]["m2"],
        mean_reward=stats["mean_reward"],
        mean_chars=stats["mean_chars"],
        mean_oracle_reward=stats["mean_oracle_reward"],
        train_steps=training.get("steps"),
        generation_backend=manifest.get("generation", {}).get("backend", "transformers"),
        resumed_stages=resumed,
    )
