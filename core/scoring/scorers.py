"""What each margin source computes from loaded models: the one path for rewards and log-prob margins.

core.scoring.run runs these over a dataset into score tables; core.online.iteration (online rounds)
and core.generation.evaluation (a reward-model judge) call the same functions on their own
generations, so a reward or an implicit margin means the same thing everywhere.

- `RewardScorer`: a sequence-classification reward model's score of (prompt, response)
  items or pairs. The text is what off-the-shelf reward models were trained on:
  conversations through the REWARD MODEL's chat template; standard rows too, as one
  user turn and one assistant turn, when its tokenizer has a template (`use_template`,
  on by default; off, or without a template: prompt + response + EOS as TRL's
  RewardTrainer reads standard text). Text that already carries a rendered template is
  scored as written. Sequences are right-padded with the model's own pad id; a
  self-check on the first batch compares several padded sequences with the same ones
  unpadded, with a tolerance set by the dtype, and falls back to one sequence per forward
  when they disagree (`notes` says so).
- `implicit_columns`: log pi_1 - log pi_0 summed over response tokens, chosen minus rejected.
- `ifd_columns`: IFD = PPL(y|x) / PPL(y) under pi_0 for both responses.

Pairs are encoded with one context per pair (core.models.logprobs.encode_pairs) and screened:
pairs whose chosen and rejected are the same tokens as scored (``token_identical``) and,
with `Limits.skip_truncated`, over-long pairs (``skipped``) get margin NaN, never a margin
of zero that would read as evidence.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from core.data.chat_templates import rendered_template
from core.data.pairs import Field
from core.errors import DmtuiError
from core.models.logprobs import (
    Encoded,
    encode,
    encode_pairs,
    pair_logprobs,
    response_logprobs,
    run_batches,
    token_identical_pairs,
)
from core.progress import ProgressFn, Reporter

PADDING_CHECK_TOLERANCE = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}
"""Padded and unpadded scores must agree within this share of (1 + |score|): fp32 rounding is
~1e-7 relative, half precision ~1e-3 per op and it compounds over layers; a pooling that reads
a pad position is off by far more."""
PADDING_CHECK_SEQUENCES = 4
"""Sequences of different lengths (shortest, longest and between) compared padded and alone."""

PassProgress = Callable[[int, int], ProgressFn | None]
"""(pass index, passes) -> progress callback of one engine pass over a chunk."""


class ScorerError(DmtuiError):
    """Models that cannot be scored together as asked."""


@dataclass(frozen=True)
class Pairs:
    """Prompts with their chosen and rejected responses, in one format."""

    prompts: list[Field]
    chosen: list[Field]
    rejected: list[Field]
    conversational: bool
    pair_ids: list[str] | None = None
    """The dataset's ids of these pairs, when they come from one (core.scoring.run)."""

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, mask: np.ndarray) -> Pairs:
        """The pairs where `mask` (booleans, one per pair) is True."""
        keep = np.flatnonzero(mask)

        def pick(column):
            return None if column is None else [column[i] for i in keep]

        return Pairs(
            pick(self.prompts), pick(self.chosen), pick(self.rejected), self.conversational, pick(self.pair_ids)
        )


@dataclass(frozen=True)
class Limits:
    """How long a scored sequence may be, and what happens to longer pairs."""

    max_length: int | None
    """Longest context + response in tokens (None: no limit)."""
    min_prompt_tokens: int | None = None
    """Context tokens a cut keeps at least (None: max_length // 2)."""
    skip_truncated: bool = False
    """Skip over-long pairs (margin NaN, ``skipped``) instead of cutting them."""


def screen(chosen: Encoded, rejected: Encoded, skip_truncated: bool) -> dict[str, np.ndarray]:
    """Flags of the pairs, and which of them go through the models (``run``)."""
    truncated = chosen.truncated | rejected.truncated
    identical = token_identical_pairs(chosen, rejected)
    skipped = truncated & skip_truncated
    return {
        "truncated": truncated,
        "token_identical": identical & ~skipped,
        "skipped": skipped,
        "boundary_moved": chosen.boundary_moved | rejected.boundary_moved,
        "run": ~identical & ~skipped,
    }


def spread(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Values of the pairs in `mask` placed back among all pairs, NaN elsewhere."""
    out = np.full(len(mask), np.nan)
    out[mask] = values
    return out


def encoded_pairs(tokenizer, pairs: Pairs, limits: Limits) -> tuple[Encoded, Encoded, dict, np.ndarray]:
    """Chosen and rejected as log-prob margins score them, the pairs' flags, and which pairs run (`screen`)."""
    chosen, rejected = encode_pairs(
        tokenizer,
        pairs.prompts,
        pairs.chosen,
        pairs.rejected,
        conversational=pairs.conversational,
        max_length=limits.max_length,
        min_prompt_tokens=limits.min_prompt_tokens,
    )
    flags = screen(chosen, rejected, limits.skip_truncated)
    return chosen, rejected, flags, flags.pop("run")


# Reward models ------------------------------------------------------------------------------


class RewardScorer:
    """A loaded reward model and its tokenizer, scoring items and pairs (see the module doc)."""

    def __init__(self, model, tokenizer, *, batch_tokens: int, use_template: bool = True) -> None:
        self.model, self.tokenizer, self.batch_tokens = model, tokenizer, batch_tokens
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.templates_standard_text = use_template and getattr(tokenizer, "chat_template", None) is not None
        self.padding_safe: bool | None = None
        self.notes: list[str] = []

    def encode_items(
        self, prompts: list[Field], responses: list[Field], *, conversational: bool, limits: Limits
    ) -> Encoded:
        """Each (prompt, response) as the reward model reads it, cut to fit its own response."""
        (items,) = self._encode([prompts, responses], conversational, limits, encode)
        return items

    def encode_pairs(self, pairs: Pairs, limits: Limits) -> tuple[Encoded, Encoded]:
        """Chosen and rejected as the reward model reads them, one context per pair."""
        chosen, rejected = self._encode(
            [pairs.prompts, pairs.chosen, pairs.rejected], pairs.conversational, limits, encode_pairs
        )
        return chosen, rejected

    def _encode(self, columns: list[list[Field]], conversational: bool, limits: Limits, encoder) -> tuple[Encoded, ...]:
        """Standard rows go through the template as one exchange, unless the text carries one
        already; one encoding per response column."""
        prompts = columns[0]
        as_chat = np.array(
            [conversational or (self.templates_standard_text and rendered_template(_text(p)) is None) for p in prompts],
            dtype=np.bool_,
        )
        parts = []
        for chat in (True, False):
            rows = np.flatnonzero(as_chat == chat)
            if not len(rows):
                continue
            texts = [[column[i] for i in rows] for column in columns]
            if chat and not conversational:
                texts = [
                    [_one_turn("user", p) for p in texts[0]],
                    *[[_one_turn("assistant", r) for r in side] for side in texts[1:]],
                ]
            encoded = encoder(
                self.tokenizer,
                *texts,
                conversational=chat,
                max_length=limits.max_length,
                min_prompt_tokens=limits.min_prompt_tokens,
            )
            parts.append((rows, encoded if isinstance(encoded, tuple) else (encoded,)))
        return _merge(parts, len(prompts), len(columns) - 1)

    def scores(
        self, sequences: list[list[int]], *, progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> np.ndarray:
        """The reward of each token sequence; the padding self-check runs on the first call."""
        pad_id = pad_id_of(self.model, self.tokenizer)
        if self.padding_safe is None and sequences:
            self.padding_safe = padding_is_safe(self.model, sequences, pad_id)
            if not self.padding_safe:
                self.notes.append(
                    "the reward model's score changed with padding: scored one sequence per "
                    "forward pass (slow but exact)"
                )
        budget = self.batch_tokens if self.padding_safe is not False else 1
        scores = np.zeros(len(sequences), dtype=np.float64)
        if not sequences:
            return scores
        lengths = [len(s) for s in sequences]

        def score(batch: list[int]) -> None:
            scores[batch] = _reward_forward(self.model, [sequences[i] for i in batch], pad_id)

        reporter = Reporter("reward", len(sequences), progress, cancel, unit="sequences")
        run_batches(range(len(sequences)), lengths, budget, score, reporter, per_item=1)
        reporter.finish()
        return scores

    def item_rewards(
        self,
        prompts: list[Field],
        responses: list[Field],
        *,
        conversational: bool,
        limits: Limits,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> np.ndarray:
        """The reward of each (prompt, response): online rounds' generations, an evaluation's answers."""
        encoded = self.encode_items(prompts, responses, conversational=conversational, limits=limits)
        return self.scores(
            [p + r for p, r in zip(encoded.prompt_ids, encoded.response_ids)], progress=progress, cancel=cancel
        )


def _text(field: Field) -> str:
    """A standard row's field (a string by the pair's format)."""
    assert isinstance(field, str), "standard rows hold strings"
    return field


def _one_turn(role: str, text: Field) -> Field:
    """A standard row's field as the one message of `role` the chat template reads."""
    return [{"role": role, "content": _text(text).strip()}]


def _merge(parts: list[tuple[np.ndarray, tuple[Encoded, ...]]], n: int, n_sides: int) -> tuple[Encoded, ...]:
    """Encodings of disjoint row sets put back in row order."""
    sides = []
    for side in range(n_sides):
        prompt_ids: list = [None] * n
        response_ids: list = [None] * n
        truncated, moved = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        for rows, encoded in parts:
            for k, i in enumerate(rows):
                prompt_ids[i], response_ids[i] = encoded[side].prompt_ids[k], encoded[side].response_ids[k]
            truncated[rows], moved[rows] = encoded[side].truncated, encoded[side].boundary_moved
        sides.append(Encoded(prompt_ids, response_ids, truncated, moved))
    return tuple(sides)


def external_columns(
    reward: RewardScorer,
    pairs: Pairs,
    limits: Limits,
    pass_progress: PassProgress,
    cancel: threading.Event | None = None,
) -> dict[str, np.ndarray]:
    """Reward of chosen and rejected and their difference, with the pairs' flags."""
    chosen, rejected = reward.encode_pairs(pairs, limits)
    flags = screen(chosen, rejected, limits.skip_truncated)
    run = flags.pop("run")
    sequences = [
        p + r for side in (chosen, rejected) for p, r in zip(side.subset(run).prompt_ids, side.subset(run).response_ids)
    ]
    rewards = reward.scores(sequences, progress=pass_progress(0, 1), cancel=cancel)
    n_run = int(run.sum())
    reward_chosen, reward_rejected = spread(rewards[:n_run], run), spread(rewards[n_run:], run)
    return {
        "margin": reward_chosen - reward_rejected,
        "reward_chosen": reward_chosen,
        "reward_rejected": reward_rejected,
        **flags,
    }


def pad_id_of(model, tokenizer) -> int:
    """The id the model's pooling treats as padding (it compares input ids with it)."""
    pad = getattr(model.config.get_text_config(), "pad_token_id", None)
    if pad is None:
        pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


@torch.inference_mode()
def _reward_forward(model, sequences: list[list[int]], pad_id: int) -> np.ndarray:
    device = next(model.parameters()).device
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
    return logits[:, 0].float().cpu().numpy().astype(np.float64)


def padding_gap(model, sequences: list[list[int]], pad_id: int) -> float:
    """The largest |score right-padded together - score alone| / (1 + |score alone|) over up to
    `PADDING_CHECK_SEQUENCES` of `sequences` of different lengths (shortest, longest and between):
    0 when they all have one length, inf when the model cannot batch them."""
    lengths = np.array([len(s) for s in sequences])
    order = np.argsort(lengths, kind="stable")
    picks = order[np.linspace(0, len(order) - 1, PADDING_CHECK_SEQUENCES).round().astype(int)]
    picked = [sequences[i] for i in dict.fromkeys(picks.tolist())]
    if len({len(s) for s in picked}) < 2:
        return 0.0
    try:
        batched = _reward_forward(model, picked, pad_id)
    except (ValueError, IndexError):  # e.g. "cannot handle batch sizes > 1 if no padding token"
        return float("inf")
    alone = np.array([_reward_forward(model, [s], pad_id)[0] for s in picked])
    return float(np.max(np.abs(batched - alone) / (1 + np.abs(alone))))


def padding_tolerance(model) -> float:
    """`PADDING_CHECK_TOLERANCE` of the model's dtype (half precision's for any other)."""
    return PADDING_CHECK_TOLERANCE.get(next(model.parameters()).dtype, PADDING_CHECK_TOLERANCE[torch.float16])


def padding_is_safe(model, sequences: list[list[int]], pad_id: int) -> bool:
    """Do sequences of different lengths score the same right-padded together as each alone,
    within the tolerance of the model's dtype (`padding_gap`)?"""
    return padding_gap(model, sequences, pad_id) <= padding_tolerance(model)


# Log-prob margins ---------------------------------------------------------------------------


def check_same_vocabulary(policy_tokenizer, reference_tokenizer, policy: str, reference: str) -> list[str]:
    """Refuse pi_1 and pi_0 with different vocabularies; the warnings (different chat templates) to record."""
    if policy_tokenizer.get_vocab() != reference_tokenizer.get_vocab():
        raise ScorerError(
            f"pi_1 ({policy}, {len(policy_tokenizer):,} tokens) and pi_0 ({reference}, "
            f"{len(reference_tokenizer):,} tokens) have different vocabularies: an implicit margin compares "
            "log-probs of the same token ids under both models, which means nothing across two vocabularies",
            hint="pass a pi_1 trained from this pi_0 (its tokenizer unchanged), or the pi_0 it was trained from",
        )
    warnings = []
    if getattr(policy_tokenizer, "chat_template", None) != getattr(reference_tokenizer, "chat_template", None):
        warnings.append(
            f"pi_1 ({policy}) and pi_0 ({reference}) have different chat templates: conversations are "
            "encoded with pi_0's, which pi_1 may not have been trained on"
        )
    return warnings


def implicit_columns(
    policy,
    reference,
    tokenizer,
    pairs: Pairs,
    limits: Limits,
    *,
    batch_tokens: int,
    pass_progress: PassProgress,
    cancel: threading.Event | None = None,
) -> dict[str, np.ndarray]:
    """m_im = (lp1_c - lp0_c) - (lp1_r - lp0_r), sums over the response tokens of pi_0's encoding.

    `policy` and `reference` are models, or views of one shared model with a ``lend()``
    context manager that yields it switched to their state (core.scoring.seed_policy.AdapterView:
    LoRA adapters on one base, kept unmerged).
    """
    chosen, rejected, flags, run = encoded_pairs(tokenizer, pairs, limits)
    chosen, rejected = chosen.subset(run), rejected.subset(run)
    columns = {}
    for index, (name, model) in enumerate((("policy", policy), ("reference", reference))):
        lend = getattr(model, "lend", None)
        with lend() if callable(lend) else nullcontext(model) as lent:
            lp_c, lp_r = pair_logprobs(
                lent, chosen, rejected, batch_tokens=batch_tokens, progress=pass_progress(index, 2), cancel=cancel
            )
        columns[f"logp_{name}_chosen"] = spread(lp_c.logprob_sum, run)
        columns[f"logp_{name}_rejected"] = spread(lp_r.logprob_sum, run)
    columns["tokens_chosen"] = spread(lp_c.n_tokens, run)
    columns["tokens_rejected"] = spread(lp_r.n_tokens, run)
    margin = (columns["logp_policy_chosen"] - columns["logp_reference_chosen"]) - (
        columns["logp_policy_rejected"] - columns["logp_reference_rejected"]
    )
    return {"margin": margin, **columns, **flags}


def ifd_columns(
    reference,
    tokenizer,
    pairs: Pairs,
    limits: Limits,
    *,
    batch_tokens: int,
    pass_progress: PassProgress,
    cancel: threading.Event | None = None,
) -> dict[str, np.ndarray]:
    """IFD_c - IFD_r; PPL(y) scores the very response tokens PPL(y|x) scored, after BOS alone."""
    chosen, rejected, flags, run = encoded_pairs(tokenizer, pairs, limits)
    chosen, rejected = chosen.subset(run), rejected.subset(run)
    conditional = pair_logprobs(
        reference, chosen, rejected, batch_tokens=batch_tokens, progress=pass_progress(0, 2), cancel=cancel
    )
    empty: Field = [] if pairs.conversational else ""
    context = encode(
        tokenizer, [empty], [pairs.chosen[0]], conversational=pairs.conversational, max_length=None
    ).prompt_ids[0]
    responses = chosen.response_ids + rejected.response_ids
    alone = Encoded(
        [list(context) for _ in responses], responses, np.concatenate([chosen.truncated, rejected.truncated])
    )
    unconditional = response_logprobs(
        reference, alone, batch_tokens=batch_tokens, progress=pass_progress(1, 2), cancel=cancel
    )
    n = len(chosen)
    columns = {}
    for side, result, part in zip(("chosen", "rejected"), conditional, (slice(0, n), slice(n, 2 * n))):
        u_sum, u_count = unconditional.logprob_sum[part], unconditional.n_tokens[part]
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 tokens: NaN
            log_ifd = u_sum / u_count - result.logprob_sum / result.n_tokens  # log PPL(y|x) - log PPL(y)
        columns[f"ifd_{side}"] = spread(np.exp(log_ifd), run)
        columns[f"logp_conditional_{side}"] = spread(result.logprob_sum, run)
        columns[f"logp_unconditional_{side}"] = spread(u_sum, run)
        columns[f"tokens_conditional_{side}"] = spread(result.n_tokens, run)
        columns[f"tokens_unconditional_{side}"] = spread(u_count, run)
    return {"margin": columns["ifd_chosen"] - columns["ifd_rejected"], **columns, **flags}
