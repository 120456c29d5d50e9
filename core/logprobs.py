"""The one log-prob engine every margin is computed with.

For (context, response) items it returns, per item, the SUM of the log-probs of the
response tokens given the context and the number of response tokens scored. The
implicit reward is a difference of two such sums (pi_1 minus pi_0) and IFD a ratio of
two perplexities (context given, context empty), so everything the scorers need is
here, computed one way.

Encoding (`encode`)
    Conversational data goes through the chat template: the prompt is rendered with
    the generation prompt, prompt + response without it, and the response text is
    what the second adds to the first. Prompt and response are tokenized
    SEPARATELY and the ids concatenated, so a BPE merge across the boundary cannot
    move it (joint tokenization would score part of the prompt as response or the
    reverse). Standard data: the prompt with the tokenizer's special tokens (BOS),
    the response without them, plus EOS (as TRL's DPOTrainer appends it).
    Too long (prompt + response > max_length): the prompt is cut from the LEFT first
    (the text nearest the response survives) but keeps at least `min_prompt_length`
    tokens (default max_length // 2) so a response is never scored without context,
    then the response is cut from the RIGHT; the item is flagged `truncated`. A
    left-cut prompt loses its BOS, as in TRL. (TRL 1.x trainers tokenize jointly and
    keep the start; scores can differ from the ones logged in training by exactly
    those boundary tokens.)
    Empty context (IFD's PPL(y)): the context is BOS alone (conversational: the
    response text is cut as it would be after a real prompt, see
    EMPTY_CONTEXT_PROBE). If the tokenizer has no BOS the first response
    token has nothing to be predicted from, so it is not scored and `n_tokens`
    counts one less.

Computation (`response_logprobs`)
    Items are sorted by length and cut into batches bounded by a padded-token budget
    (`batch_tokens`), so padding stays small. The decoder body runs once per batch
    (attention mask + position ids, so left and right padding give the same numbers);
    the hidden states at the positions that predict response tokens are gathered and
    only those go through the output embedding, in chunks of positions, with a
    logsumexp per chunk: no [batch, seq, vocab] tensor is ever built for prompt
    tokens. Architectures that transform logits after the LM head (Gemma-style final
    softcapping, Cohere logit_scale, Granite logits_scaling, ...) use the model's own
    forward instead, keeping only the logits from the first response position on
    (`logits_to_keep`). Out-of-memory halves the token budget (to half the failed batch) and retries that
    batch; the smaller budget stays for the rest of the run.

Shared prompt (measured, see bench/bench_logprobs.py)
    `pair_logprobs` runs a prompt shared by chosen and rejected once, repeats its KV
    cache for the two responses and runs only the responses again. Measured on CPU
    (2 threads, Llama 19.5M params: vocab 32k, hidden 256, 4 layers; 16 pairs,
    prompt ~200, responses ~50 tokens; best of 3, busy shared machine):
        naive per-sequence full logits   4548 tok/s   x1.00
        response_logprobs (engine)       9274 tok/s   x2.04
        pair_logprobs (shared prompt)   12726 tok/s   x2.80  (x1.37 over the engine)
    and it agrees with the plain path to 1e-4 (both within 1e-4 of naive). The
    saving is the second prompt pass, so it grows with prompt/response length
    ratio; kept. It falls back to the plain path for pairs whose prompts differ
    after truncation, empty contexts, and full-forward architectures.
    Logits memory: the engine never exceeds LOGITS_CHUNK_ELEMENTS (128 MiB fp32;
    92 MiB in that run) whatever the batch, where a batched full forward of the
    same 16 x 250 tokens would build 16 x 250 x 32k fp32 logits = 488 MiB.
"""

from __future__ import annotations

import inspect
import threading
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from core.defaults import DEFAULT_BATCH_TOKENS
from core.errors import DmtuiError
from core.pairs import Field
from core.progress import ProgressFn, Reporter

EMPTY_CONTEXT_PROBE = [{"role": "user", "content": ""}]
"""Chat templates cannot render an empty conversation; for an empty conversational
context the response text is cut out after this probe prompt, so it is the same text a
real prompt would give (content and end of turn), and the context is just BOS."""
LOGITS_CHUNK_ELEMENTS = 2**25
"""Positions go through the LM head in chunks of at most this many logits (128 MiB fp32)."""
LOGIT_TRANSFORM_ATTRS = {
    "final_logit_softcapping": (None, 0),
    "logit_softcapping": (None, 0),
    "logits_soft_cap": (None, 0),
    "logit_scale": (None, 1),
    "logits_scaling": (None, 1),
    "output_multiplier": (None, 1),
    "logits_mup_width_multiplier": (None, 1),
}
"""Config fields by which a forward changes the logits after the LM head, with their no-op values."""


class EncodingError(DmtuiError):
    """Prompts and responses cannot be turned into token ids as asked."""


@dataclass(frozen=True)
class Encoded:
    """Token ids per item: the context (prompt) and the response, kept apart."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    truncated: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt_ids)


@dataclass(frozen=True)
class LogprobResult:
    """Per item: sum of response-token log-probs, tokens scored, whether it was truncated."""

    logprob_sum: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray


def encode(
    tokenizer,
    prompts: Sequence[Field],
    responses: Sequence[Field],
    *,
    conversational: bool,
    max_length: int | None,
    min_prompt_length: int | None = None,
    append_eos: bool = True,
) -> Encoded:
    """Tokenize (prompt, response) items for scoring; see the module docstring for the rules.

    Conversational items are message lists (prompt may be [] for an empty context),
    standard items strings (prompt may be ""). `append_eos` applies to standard data.
    """
    if len(prompts) != len(responses):
        raise EncodingError(f"{len(prompts)} prompts but {len(responses)} responses")
    if conversational:
        prompt_texts, response_texts = _split_chat_texts(tokenizer, prompts, responses)
        prompt_ids = _tokenize(tokenizer, prompt_texts, special_tokens=False)
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        prompt_ids = [ids if text else list(bos) for ids, text in zip(prompt_ids, prompt_texts)]
    else:
        prompt_texts, response_texts = list(prompts), list(responses)
        prompt_ids = _tokenize(tokenizer, prompt_texts, special_tokens=True)
    response_ids = _tokenize(tokenizer, response_texts, special_tokens=False)
    eos = tokenizer.eos_token_id
    if not conversational and append_eos and eos is not None:
        response_ids = [ids if ids[-1:] == [eos] else ids + [eos] for ids in response_ids]
    if max_length is None:
        return Encoded(prompt_ids, response_ids, np.zeros(len(prompt_ids), dtype=bool))
    floor = max_length // 2 if min_prompt_length is None else min_prompt_length
    cut = [_truncate(p, r, max_length, floor) for p, r in zip(prompt_ids, response_ids)]
    return Encoded(
        [p for p, _, _ in cut], [r for _, r, _ in cut], np.array([t for _, _, t in cut], dtype=bool)
    )


def token_identical_pairs(chosen: Encoded, rejected: Encoded) -> np.ndarray:
    """Per pair: are chosen and rejected the same token ids (context and response) as scored?

    After truncation many pairs differ only past the cut; their margin is exactly
    zero by construction, which is no evidence about the pair. Callers report them
    (combine with ``chosen.truncated | rejected.truncated`` to tell the cause).
    """
    if len(chosen) != len(rejected):
        raise EncodingError(f"{len(chosen)} chosen but {len(rejected)} rejected encodings")
    return np.array(
        [
            cp == rp and cr == rr
            for cp, cr, rp, rr in zip(
                chosen.prompt_ids, chosen.response_ids, rejected.prompt_ids, rejected.response_ids
            )
        ],
        dtype=bool,
    )


def response_logprobs(
    model,
    encoded: Encoded,
    *,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    padding_side: str = "right",
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> LogprobResult:
    """Sum of response-token log-probs per item, with token counts (float64 arrays)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    n = len(encoded)
    sums = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.float64)
    scorer = _Scorer(model)
    lengths = [len(p) + len(r) for p, r in zip(encoded.prompt_ids, encoded.response_ids)]

    def score(batch: list[int]) -> None:
        rows = [(encoded.prompt_ids[i], encoded.response_ids[i]) for i in batch]
        sums[batch], counts[batch] = scorer.score(rows, padding_side)

    reporter = Reporter("log-probs", n, progress, cancel, unit="sequences")
    run_batches(range(n), lengths, batch_tokens, score, reporter, per_item=1)
    reporter.finish()
    return LogprobResult(sums, counts, encoded.truncated.copy())


def pair_logprobs(
    model,
    chosen: Encoded,
    rejected: Encoded,
    *,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> tuple[LogprobResult, LogprobResult]:
    """`response_logprobs` of chosen and rejected, running each shared prompt only once.

    Pairs whose prompt ids are the same (and not empty) run the prompt once, left-padded,
    repeat its KV cache for the two responses and run only the responses again. Other
    pairs (prompts cut differently by truncation, empty context) and architectures on
    the full-forward path go through `response_logprobs`.
    """
    if len(chosen) != len(rejected):
        raise EncodingError(f"{len(chosen)} chosen but {len(rejected)} rejected encodings")
    n = len(chosen)
    scorer = _Scorer(model)
    shared = [
        i for i in range(n)
        if scorer.can_share_prompt and chosen.prompt_ids[i] and chosen.prompt_ids[i] == rejected.prompt_ids[i]
        and chosen.response_ids[i] and rejected.response_ids[i]
    ]
    results = [np.zeros((2, n), dtype=np.float64) for _ in range(2)]  # sums, counts x (chosen, rejected)
    reporter = Reporter("log-probs", 2 * n, progress, cancel, unit="sequences")
    shared_set = set(shared)
    rest = [i for i in range(n) if i not in shared_set]
    if rest:
        for side, encoded in enumerate((chosen, rejected)):
            part = _subset(encoded, rest)
            lengths = [len(p) + len(r) for p, r in zip(part.prompt_ids, part.response_ids)]

            def score_rest(batch: list[int], side=side, part=part) -> None:
                rows = [(part.prompt_ids[i], part.response_ids[i]) for i in batch]
                items = [rest[i] for i in batch]
                results[0][side, items], results[1][side, items] = scorer.score(rows, "right")

            run_batches(range(len(rest)), lengths, batch_tokens, score_rest, reporter, per_item=1)
    pair_cost = [
        len(chosen.prompt_ids[i]) + 2 * max(len(chosen.response_ids[i]), len(rejected.response_ids[i]))
        if i in shared_set else 0
        for i in range(n)
    ]

    def score_shared(batch: list[int]) -> None:
        rows = [(chosen.prompt_ids[i], chosen.response_ids[i], rejected.response_ids[i]) for i in batch]
        sums, counts = scorer.score_shared_prompt(rows)
        results[0][:, batch], results[1][:, batch] = sums, counts

    run_batches(shared, pair_cost, batch_tokens, score_shared, reporter, per_item=2)
    reporter.finish()
    return tuple(
        LogprobResult(results[0][side], results[1][side], encoded.truncated.copy())
        for side, encoded in enumerate((chosen, rejected))
    )


def run_batches(items, lengths, batch_tokens, score, reporter: Reporter, *, per_item: int) -> None:
    """Score length-bucketed batches, longest first; halve the budget and retry on out-of-memory."""
    order = sorted(items, key=lambda i: -lengths[i])
    queue = deque(_buckets(order, lengths, batch_tokens))
    while queue:
        reporter.check()
        batch = queue.popleft()
        try:
            score(batch)
        except RuntimeError as exc:
            batch_tokens = _back_off(exc, batch, lengths, batch_tokens)
            queue.extendleft(reversed(_buckets(batch, lengths, batch_tokens)))
            continue
        reporter.advance(per_item * len(batch))


def _subset(encoded: Encoded, items: list[int]) -> Encoded:
    return Encoded(
        [encoded.prompt_ids[i] for i in items], [encoded.response_ids[i] for i in items], encoded.truncated[items]
    )


def needs_full_forward(model) -> bool:
    """True when the LM head alone does not give the model's logits (see LOGIT_TRANSFORM_ATTRS)."""
    head, decoder = model.get_output_embeddings(), model.get_decoder()
    if head is None or decoder is None or decoder is model:
        return True
    config = model.config
    configs = [config] + ([config.get_text_config()] if hasattr(config, "get_text_config") else [])
    return any(
        getattr(c, name, None) not in no_ops for c in configs for name, no_ops in LOGIT_TRANSFORM_ATTRS.items()
    )


class _Scorer:
    """Runs one padded batch through a model and sums log-probs of response tokens."""

    def __init__(self, model) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.full_forward = needs_full_forward(model)
        body = model if self.full_forward else model.get_decoder()
        params = inspect.signature(body.forward).parameters
        self.body = body
        self.takes_position_ids = "position_ids" in params
        self.takes_logits_to_keep = "logits_to_keep" in params
        self.head = model.get_output_embeddings()
        self.cache_kwarg = next((k for k in ("cache", "past_key_values") if k in params), None)
        self.can_share_prompt = not self.full_forward and self.cache_kwarg is not None and self.takes_position_ids

    @torch.inference_mode()
    def score_shared_prompt(self, rows: list[tuple[list[int], list[int], list[int]]]):
        """(prompt, chosen, rejected) rows: prompt once (left-padded), KV cache x2, responses right-padded."""
        width = max(len(p) for p, _, _ in rows)
        prompt_ids = torch.zeros(len(rows), width, dtype=torch.long)
        prompt_mask = torch.zeros_like(prompt_ids)
        for i, (prompt, _, _) in enumerate(rows):
            prompt_ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            prompt_mask[i, width - len(prompt) :] = 1
        first = self.body(
            input_ids=prompt_ids.to(self.device), attention_mask=prompt_mask.to(self.device),
            position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0).to(self.device), use_cache=True,
        )
        cache = first.cache if hasattr(first, "cache") else first.past_key_values
        cache.batch_repeat_interleave(2)
        responses = [r for _, chosen, rejected in rows for r in (chosen, rejected)]
        resp_width = max(len(r) for r in responses)
        resp_ids = torch.zeros(len(responses), resp_width, dtype=torch.long)
        resp_mask = torch.zeros_like(resp_ids)
        for k, response in enumerate(responses):
            resp_ids[k, : len(response)] = torch.tensor(response, dtype=torch.long)
            resp_mask[k, : len(response)] = 1
        prompt_lens = prompt_mask.sum(-1).repeat_interleave(2)
        second = self.body(
            input_ids=resp_ids.to(self.device),
            attention_mask=torch.cat([prompt_mask.repeat_interleave(2, 0), resp_mask], dim=-1).to(self.device),
            position_ids=(prompt_lens[:, None] + torch.arange(resp_width)).to(self.device),
            use_cache=True, **{self.cache_kwarg: cache},
        )
        # Response token 0 is predicted by the last prompt position, token j by response position j-1.
        predictors = torch.cat(
            [first.last_hidden_state[:, -1:].repeat_interleave(2, 0), second.last_hidden_state[:, :-1]], dim=1
        )
        row_t = torch.cat([torch.full((len(r),), k, dtype=torch.long) for k, r in enumerate(responses)])
        col_t = torch.cat([torch.arange(len(r)) for r in responses])
        targets = torch.tensor([t for r in responses for t in r], dtype=torch.long, device=self.device)
        token_logps = self._head_logps(predictors[row_t.to(self.device), col_t.to(self.device)], targets)
        sums = torch.zeros(len(responses), dtype=torch.float64).index_add_(0, row_t, token_logps.double().cpu())
        counts = torch.tensor([len(r) for r in responses], dtype=torch.float64)
        return sums.view(-1, 2).T.numpy(), counts.view(-1, 2).T.numpy()

    @torch.inference_mode()
    def score(self, rows: list[tuple[list[int], list[int]]], padding_side: str):
        seqs = [p + r for p, r in rows]
        width = max(len(s) for s in seqs)
        input_ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        row_index, columns, targets = [], [], []
        for i, ((prompt, response), seq) in enumerate(zip(rows, seqs)):
            offset = width - len(seq) if padding_side == "left" else 0
            input_ids[i, offset : offset + len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, offset : offset + len(seq)] = 1
            first = 1 if not prompt else 0  # nothing predicts the first token of an empty context
            for j in range(first, len(response)):
                row_index.append(i)
                columns.append(offset + len(prompt) + j - 1)
                targets.append(response[j])
        sums = torch.zeros(len(rows), dtype=torch.float64)
        counts = torch.bincount(torch.tensor(row_index, dtype=torch.long), minlength=len(rows))
        if not targets:
            return sums.numpy(), counts.double().numpy()
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self.takes_position_ids:
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)
        row_t = torch.tensor(row_index, dtype=torch.long)
        col_t = torch.tensor(columns, dtype=torch.long, device=self.device)
        tgt_t = torch.tensor(targets, dtype=torch.long, device=self.device)
        if self.full_forward:
            token_logps = self._full_forward(inputs, row_t.to(self.device), col_t, tgt_t, width)
        else:
            hidden = self.body(**inputs, use_cache=False).last_hidden_state
            picked = hidden[row_t.to(self.device), col_t]
            token_logps = self._head_logps(picked, tgt_t)
        sums.index_add_(0, row_t, token_logps.double().cpu())
        return sums.numpy(), counts.double().numpy()

    def _head_logps(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Log-probs of `targets` from hidden states, through the LM head a chunk at a time."""
        chunk = max(1, LOGITS_CHUNK_ELEMENTS // self.head.weight.shape[0])
        parts = []
        for start in range(0, hidden.shape[0], chunk):
            logits = self.head(hidden[start : start + chunk]).float()
            picked = logits.gather(-1, targets[start : start + chunk, None]).squeeze(-1)
            parts.append(picked - torch.logsumexp(logits, dim=-1))
        return torch.cat(parts)

    def _full_forward(self, inputs, rows, columns, targets, width) -> torch.Tensor:
        keep = width - int(columns.min()) if self.takes_logits_to_keep else width
        extra = {"logits_to_keep": keep} if self.takes_logits_to_keep else {}
        logits = self.model(**inputs, use_cache=False, **extra).logits
        picked = logits[rows, columns - (width - keep)].float()
        return picked.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(picked, dim=-1)


def _split_chat_texts(tokenizer, prompts, responses) -> tuple[list[str], list[str]]:
    """Render prompts and prompt+response with the chat template; the response is the difference."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise EncodingError(
            "conversational data needs a chat template, and this tokenizer has none",
            hint="use the tokenizer of the chat model that was trained on this template",
        )
    prompt_texts, response_texts = [], []
    for prompt, response in zip(prompts, responses):
        rendered_prompt = list(prompt) or EMPTY_CONTEXT_PROBE
        prompt_text = tokenizer.apply_chat_template(rendered_prompt, add_generation_prompt=True, tokenize=False)
        full_text = tokenizer.apply_chat_template(rendered_prompt + list(response), tokenize=False)
        if not full_text.startswith(prompt_text):
            raise EncodingError(
                "the chat template renders the prompt differently when a response follows, so the "
                f"response cannot be cut out of the text: prompt alone {prompt_text[-80:]!r}, "
                f"with the response {full_text[: len(prompt_text)][-80:]!r}",
                hint="use a template whose add_generation_prompt output is a prefix of the full "
                "conversation (templates that drop reasoning or rewrite earlier turns are not)",
            )
        prompt_texts.append(prompt_text if prompt else "")
        response_texts.append(full_text[len(prompt_text) :])
    return prompt_texts, response_texts


def _tokenize(tokenizer, texts: list[str], *, special_tokens: bool) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=special_tokens)["input_ids"]]


def _truncate(prompt: list[int], response: list[int], max_length: int, min_prompt_length: int):
    """Fit prompt + response into max_length: prompt cut from the left (down to a floor), then response from the right."""
    if len(prompt) + len(response) <= max_length:
        return prompt, response, False
    keep_prompt = min(max(max_length - len(response), min(len(prompt), min_prompt_length)), max_length)
    return prompt[len(prompt) - keep_prompt :], response[: max_length - keep_prompt], True


def _buckets(order: Sequence[int], lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Cut items (already sorted longest first) into batches of at most `batch_tokens` padded tokens."""
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        new_width = max(width, lengths[i])
        if current and new_width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, new_width = [], lengths[i]
        current.append(i)
        width = new_width
    if current:
        batches.append(current)
    return batches


def _back_off(exc: RuntimeError, batch: list[int], lengths: Sequence[int], batch_tokens: int) -> int:
    """After an out-of-memory error: half the padded tokens of the batch that failed
    (never more than the budget it had), or an error when a single sequence fails."""
    if "out of memory" not in str(exc).lower() and not isinstance(exc, torch.cuda.OutOfMemoryError):
        raise exc
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if len(batch) == 1:
        raise DmtuiError(
            f"out of memory scoring a single sequence of {lengths[batch[0]]} tokens",
            hint="lower max_length, use a smaller model, or free memory on the device",
        ) from exc
    padded_tokens = len(batch) * max(lengths[i] for i in batch)
    return max(1, min(batch_tokens, padded_tokens) // 2)
