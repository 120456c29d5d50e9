"""Judging a trained policy against the initial one: win rate by a judge, on the same prompts.

`evaluate(policy, reference_policy, prompts, judge=...)` samples responses from both
models to the same prompts (temperature 0.7 as in the paper's online rounds, seeded,
batched, left-padded, through each tokenizer's chat template, on one device and dtype:
core.models.load.LoadedModels; the sampling itself is core.generation.backends'), has the
judge reward every response, and compares the two models prompt by prompt: the policy
wins a prompt when its response earns more reward; ties count half.

Judges: `RewardModelJudge`, any sequence-classification reward model, reading each
exchange through its chat template exactly as core.scoring.scorers scores external margins, and
the demo world's oracle (`core.demo.oracle.OracleJudge`, which also counts toxic
answers; it only knows demo prompts). Real prompts (`read_prompts_file`) need a reward
model. The engine never imports the demo: the caller picks the judge.

Both models draw with the same seed (common random numbers), so a model evaluated
against itself ties on every prompt and scores exactly 0.5, and two similar models
differ only where their distributions do.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from core.defaults import DEFAULT_BATCH_TOKENS
from core.errors import DmtuiError
from core.generation.backends import DEFAULT_BATCH_SIZE, Generations, generate_responses
from core.progress import ProgressFn

if TYPE_CHECKING:
    from core.data.pairs import Field
    from core.models.load import LoadedModels

DEFAULT_PROMPTS = 256
DEFAULT_MAX_NEW_TOKENS = 64
"""pi_0's demo answers run to about 45 tokens; longer generations are cut and judged as they are
(a cut sentence reads as an unknown one, -0.5)."""
EXAMPLES_KEPT = 3


class EvaluationError(DmtuiError):
    """An evaluation that cannot run as asked."""


@dataclass(frozen=True)
class ResponseStats:
    """What the judge says about one model's responses, and how long they are."""

    mean_reward: float
    mean_chars: float
    mean_tokens: float
    toxic_share: float | None
    """Share of responses with at least one insult to the user (the demo oracle knows; a reward model: None)."""


class Judge(Protocol):
    """Rewards responses to prompts; a higher reward is a better response."""

    name: str

    def rewards(self, prompts: list[str], responses: list[str]) -> np.ndarray: ...

    def toxic(self, prompts: list[str], responses: list[str]) -> np.ndarray | None: ...


class RewardModelJudge:
    """A reward model's score of each exchange (prompt as the user turn, response as the assistant's)."""

    def __init__(
        self,
        path: str | os.PathLike,
        models=None,
        *,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_length: int | None = None,
    ) -> None:
        from core.models.load import LoadedModels, model_context_length

        self.name, self.path = str(path), path
        self.models = models or LoadedModels()
        context = model_context_length(path)
        self.max_length = min(n for n in (max_length, context) if n) if (max_length or context) else None
        self.batch_tokens = batch_tokens

    def rewards(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        from core.scoring.scorers import Limits, RewardScorer

        scorer = RewardScorer(
            self.models.reward_model(self.path), self.models.tokenizer(self.path), batch_tokens=self.batch_tokens
        )
        chat_prompts: list[Field] = [[{"role": "user", "content": p}] for p in prompts]
        chat_responses: list[Field] = [[{"role": "assistant", "content": r}] for r in responses]
        return scorer.item_rewards(chat_prompts, chat_responses, conversational=True, limits=Limits(self.max_length))

    def toxic(self, prompts: list[str], responses: list[str]) -> None:
        return None


@dataclass(frozen=True)
class EvalReport:
    """One policy judged against a reference on the same prompts."""

    policy: str
    reference: str
    prompts: int
    samples_per_prompt: int
    temperature: float
    max_new_tokens: int
    seed: int
    wins: int
    ties: int
    losses: int
    win_rate: float
    """(wins + ties / 2) / comparisons."""
    policy_stats: ResponseStats
    reference_stats: ResponseStats
    examples: list[dict[str, Any]]
    """The first few comparisons: prompt, both responses and their rewards."""
    generation_backend: str = "transformers"
    """The backend that sampled both models' responses (core.generation.backends)."""
    judge: str = "demo oracle"
    """Who rewarded the responses: the demo oracle or a reward model's path."""
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def comparisons(self) -> int:
        return self.wins + self.ties + self.losses

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "comparisons": self.comparisons}


def read_prompts_file(path: str | os.PathLike) -> list[str]:
    """The prompts of a JSON-lines file, one object with a "prompt" string per line (blank lines skipped)."""
    prompts = []
    try:
        for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise EvaluationError(
                    f'{path}:{number}: no "prompt" string', 'each line must be a JSON object like {"prompt": "..."}'
                )
            prompts.append(record["prompt"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationError(
            f"{path}: cannot read prompts ({error})", 'pass a JSON-lines file with one {"prompt": "..."} per line'
        ) from None
    if not prompts:
        raise EvaluationError(f"{path} holds no prompts")
    return prompts


def response_stats(rewards: np.ndarray, toxic: np.ndarray | None, generations: Generations) -> ResponseStats:
    """Mean reward, length and toxic share of one model's responses."""
    n = len(generations.texts)
    return ResponseStats(
        mean_reward=float(np.mean(rewards)),
        mean_chars=sum(map(len, generations.texts)) / n,
        mean_tokens=sum(generations.token_counts) / n,
        toxic_share=None if toxic is None else float(np.mean(toxic)),
    )


def evaluate(
    policy: str | os.PathLike,
    reference_policy: str | os.PathLike,
    prompts: list[str],
    *,
    judge: Judge,
    samples_per_prompt: int = 1,
    temperature: float = 0.7,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    backend: str = "auto",
    models: LoadedModels | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> EvalReport:
    """Win rate of `policy` against `reference_policy` on `prompts`, judged by `judge`.

    Both are causal-LM folders (or model ids) with chat templates; a training run's
    ``final/`` folder is one. Response k of prompt i of the policy is compared with
    response k of prompt i of the reference. `models` sets the device and dtype of every
    model (the judge's reward model's too when it shares them).
    """
    from core.models.load import LoadedModels

    if not prompts:
        raise EvaluationError("no prompts to evaluate on")
    if samples_per_prompt < 1 or max_new_tokens < 1:
        raise EvaluationError("samples_per_prompt and max_new_tokens must be at least 1")
    if not temperature > 0:
        raise EvaluationError(f"temperature must be above 0, not {temperature}", "sampling at 0 is greedy decoding")
    models = models or LoadedModels()
    sampling: dict[str, Any] = {
        "samples_per_prompt": samples_per_prompt,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "batch_size": batch_size,
        "backend": backend,
        "models": models,
        "cancel": cancel,
    }
    policy_out = generate_responses(policy, prompts, progress=_staged(progress, "policy"), **sampling)
    models.release(policy)
    reference_out = generate_responses(reference_policy, prompts, progress=_staged(progress, "reference"), **sampling)
    models.release(reference_policy)
    judged_prompts = [prompt for prompt in prompts for _ in range(samples_per_prompt)]
    rewards = {
        name: judge.rewards(judged_prompts, out.texts)
        for name, out in (("policy", policy_out), ("reference", reference_out))
    }
    wins = int(np.sum(rewards["policy"] > rewards["reference"]))
    ties = int(np.sum(rewards["policy"] == rewards["reference"]))
    losses = len(judged_prompts) - wins - ties
    examples = [
        {
            "prompt": prompt,
            "policy": mine,
            "policy_reward": float(rewards["policy"][i]),
            "reference": theirs,
            "reference_reward": float(rewards["reference"][i]),
        }
        for i, (prompt, mine, theirs) in enumerate(zip(judged_prompts, policy_out.texts, reference_out.texts))
        if i < EXAMPLES_KEPT
    ]
    n = len(judged_prompts)
    stats = {
        name: response_stats(rewards[name], judge.toxic(judged_prompts, out.texts), out)
        for name, out in (("policy", policy_out), ("reference", reference_out))
    }
    return EvalReport(
        policy=str(policy),
        reference=str(reference_policy),
        prompts=len(prompts),
        samples_per_prompt=samples_per_prompt,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        seed=seed,
        wins=wins,
        ties=ties,
        losses=losses,
        win_rate=(wins + ties / 2) / n,
        policy_stats=stats["policy"],
        reference_stats=stats["reference"],
        examples=examples,
        generation_backend=policy_out.backend,
        judge=judge.name,
        device=str(models.device),
        dtype=str(models.dtype).removeprefix("torch."),
    )


def _staged(progress: ProgressFn | None, stage: str) -> ProgressFn | None:
    """`progress` with each report's stage renamed, so the two generation passes are told apart."""
    if progress is None:
        return None
    return lambda report: progress(replace(report, stage=stage))


def final_model(path: str | os.PathLike) -> Path:
    """A training run folder means its ``final/`` model; anything else is taken as given."""
    path = Path(path)
    if (path / "run.json").is_file() and (path / "final").is_dir():
        return path / "final"
    return path
