"""The demo world's judge: its true (oracle) reward, and the prompts it knows (held out, online).

`OracleJudge` is a judge for core.generation.evaluation.evaluate that recomputes the demo world's
true reward from the text, and also counts toxic answers. It only knows demo prompts.

Held-out prompts (`held_out_prompts`) come from the demo world's prompt generator on a
stream of its own (`EVAL_PROMPT_STREAM`), not the dataset's. The world knows only 90
prompt texts (10 topics x 3 tasks x 3 templates) and the 4,000 pairs use them all, so
what is held out is the draw and every response, not the prompt wording: the test is
whether a policy answers the world's questions better, not whether it generalises to
new ones. `online_prompts` is the prompt source `dmtui iterate` gives core.online.iteration
when no prompts file is named, each round on a stream of its own (`ITERATE_PROMPT_STREAM`).
"""

from __future__ import annotations

import numpy as np

from core.demo.world import ResponseSampler, WorldConfig, oracle_reward, response_features
from core.generation.evaluation import EvaluationError

EVAL_PROMPT_STREAM = 6
"""`ResponseSampler` stream of held-out prompts (the dataset uses 0-1, the demo models 2-5)."""
ITERATE_PROMPT_STREAM = 7
"""`ResponseSampler` stream of the online prompts (dataset 0-1, demo models 2-5, eval 6)."""


class OracleJudge:
    """The demo world's true reward (core.demo.world), recomputed from the text."""

    name = "demo oracle"

    def rewards(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        return np.array([oracle_reward(p, r) for p, r in zip(prompts, responses)], dtype=np.float64)

    def toxic(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        return np.array([response_features(p, r)["toxic"] > 0 for p, r in zip(prompts, responses)])


def held_out_prompts(n: int, seed: int = 0, world: WorldConfig | None = None) -> list[str]:
    """`n` demo prompts drawn on `EVAL_PROMPT_STREAM` (see the module doc on what is held out).

    >>> held_out_prompts(2) == held_out_prompts(2) != held_out_prompts(2, seed=1)
    True
    """
    if n < 1:
        raise EvaluationError(f"the number of prompts must be at least 1, not {n}")
    sampler = ResponseSampler((world or WorldConfig()).seed, EVAL_PROMPT_STREAM + 10 * seed)
    return [sampler.prompt()[1] for _ in range(n)]


def online_prompts(n: int, seed: int, r: int) -> list[str]:
    """Round r's `n` prompts of an online run seeded `seed` (a core.online.iteration.RoundPrompts).

    >>> online_prompts(2, 0, 0) == online_prompts(2, 0, 0) != online_prompts(2, 0, 1)
    True
    """
    sampler = ResponseSampler(WorldConfig().seed, ITERATE_PROMPT_STREAM + 10 * seed + 1000 * r)
    return [sampler.prompt()[1] for _ in range(n)]
