"""The one log-prob engine every margin is computed with.

For (context, response) items it returns, per item, the SUM of the log-probs of the
response tokens given the context and the number of response tokens scored. The
implicit reward is a difference of two such sums (pi_1 minus pi_0) and IFD a ratio of
two perplexities (context given, context empty), so everything the scorers need is
here, computed one way.

Encoding (`encode`, `encode_pairs`)
    The response tokens scored are exactly the tokens that follow the prompt in the joint
    tokenization of prompt + response: the ids the model reads when the conversation is
    written out whole, which are also what it emits after the prompt.
    - Conversations go through the tokenizer's chat template, rendered once for the prompt
      (with the generation prompt) and once with the response; both are tokenized as
      written (the template writes BOS, role markers and end of turn; nothing is added).
    - Standard text: the tokenizer's leading special tokens (BOS) once, then prompt +
      response tokenized as one text, then the tokenizer's closing special tokens
      (``add_eos_token``'s EOS, a SEP), or EOS when it adds none (as TRL appends it). A
      text that already carries a rendered chat template (core.data.chat_templates) is scored
      as written: no special token is added, not even BOS (nor is a reward model's
      template applied to it, core.scoring.run).
    - Where the prompt's own ids are not a prefix of the joint ids (a merge across the
      boundary, e.g. "?" + "\n\nSure" under Llama-3's pre-tokenizer), the boundary moves
      back to where they diverge, as TRL 1.x's DPOTrainer does: the merged token is
      scored as response. Such items are flagged `boundary_moved` (callers count them).
      For a pair the boundary is the same for chosen and rejected (the earlier one).
    - Why joint: tokenizing the response alone differs where the tokenizer treats the
      start of a text specially. A SentencePiece tokenizer with a dummy prefix
      (Metaspace; Llama-2, Mistral-7B-v0.1, Zephyr, TinyLlama) writes "Sure" after
      "[/INST]" as "S", "ure" but alone as "▁Sure", a token the model never emits there:
      several nats per pair.
    Too long (context + response > max_length): `encode_pairs` cuts a pair as one, so
    chosen and rejected keep the same context, sized by the longer response. The context
    loses tokens from the LEFT (the text nearest the response survives) but keeps its
    header (BOS; for conversations everything the template writes before the first
    message's text: a system prompt it adds, the first role marker) and at least
    `min_prompt_tokens` tokens in all (default max_length // 2), so a response is never
    scored without context; then the responses lose their ends. Both items are flagged
    `truncated`. `encode` cuts each item for its own response.
    Empty context (IFD's PPL(y)): the context is BOS alone (conversational: the
    response is tokenized as it would be after a real prompt, see EMPTY_CONTEXT_PROBE).
    If the tokenizer has no BOS the first response token has nothing to be predicted
    from, so it is not scored and `n_tokens` counts one less.

Computation (`response_logprobs`)
    Items are sorted by length and cut into batches bounded by a padded-token budget
    (`batch_tokens`), so padding stays small. The decoder body runs once per batch
    (attention mask + position ids, so left and right padding give the same numbers);
    the hidden states at the positions that predict response tokens are gathered and
    only those go through the output embedding, in chunks of positions, with a
    logsumexp per chunk: no [batch, seq, vocab] tensor is ever built for prompt
    tokens. The head runs in fp32 whatever the model's dtype, and applies Gemma's final
    soft-cap when the config has one. Architectures that transform logits otherwise
    after the LM head (Cohere logit_scale, Granite logits_scaling, ...) use the model's
    own forward instead, keeping only the logits from the first response position on
    (`logits_to_keep`; there the logits are in the model's dtype). Out-of-memory halves
    the token budget (to half the failed batch) and retries that batch; the smaller
    budget stays for the rest of the run.

Shared prompt
    `pair_logprobs` runs a prompt shared by chosen and rejected once, repeats its KV
    cache for the two responses and runs only the responses again; it agrees with the
    plain path to 1e-4. The saving is the second prompt pass, so it grows with the
    prompt/response length ratio (bench/bench_logprobs.py measures it; figures in
    bench/README.md). It falls back to the plain path for pairs whose prompts differ
    after truncation, empty contexts, and full-forward architectures.
    Logits memory: the engine never holds more than LOGITS_CHUNK_ELEMENTS (128 MiB
    fp32) of logits whatever the batch, where a batched full forward builds
    batch x length x vocab of them (bench/logits_memory.py).
"""

from __future__ import annotations

import inspect
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field

import numpy as np
import torch

from core.data.chat_templates import rendered_template
from core.data.pairs import Field
from core.defaults import DEFAULT_BATCH_TOKENS
from core.errors import DmtuiError
from core.progress import ProgressFn, Reporter

HEADER_MARKER = "DMTUI-FIRST-MESSAGE-STARTS-HERE"
"""Stands in for the first message's text to find where a chat template's header ends."""
EMPTY_CONTEXT_PROBE = [{"role": "user", "content": ""}]
"""Chat templates cannot render an empty conversation; for an empty conversational
context the response text is cut out after this probe prompt, so it is the same text a
real prompt would give (content and end of turn), and the context is just BOS."""
MAX_PADDING_SHARE = 0.125
"""A batch stops growing when more than this share of its tokens would be padding."""
LOGITS_CHUNK_ELEMENTS = 2**25
"""Positions go through the LM head in chunks of at most this many logits (128 MiB fp32)."""
SOFTCAP_ATTR = "final_logit_softcapping"
"""Gemma-2/3 cap the logits with cap * tanh(logits / cap); the response-only head applies it too."""
LOGIT_TRANSFORM_ATTRS = {
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
    boundary_moved: np.ndarray = field(init=False)
    """Per item: the prompt's own ids were not a prefix of the joint ids (a merge across the
    boundary), so the boundary moved back to where they diverge."""
    moved: InitVar[np.ndarray | None] = None
    """`boundary_moved` as given to the constructor; None: no item moved."""

    def __post_init__(self, moved: np.ndarray | None) -> None:
        object.__setattr__(
            self, "boundary_moved", np.zeros(len(self.prompt_ids), dtype=bool) if moved is None else moved
        )

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def subset(self, items: Sequence[int] | np.ndarray) -> Encoded:
        """The items at these indices (a boolean mask is taken as the indices it marks)."""
        items = np.asarray(items)
        keep = np.flatnonzero(items) if items.dtype == bool else items.astype(np.int64)
        return Encoded(
            [self.prompt_ids[i] for i in keep],
            [self.response_ids[i] for i in keep],
            self.truncated[keep],
            self.boundary_moved[keep],
        )


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
    min_prompt_tokens: int | None = None,
) -> Encoded:
    """Tokenize (prompt, response) items for scoring, each under its own context.

    Conversational items are message lists (prompt may be [] for an empty context),
    standard items strings (prompt may be ""). See the module docstring for the rules;
    a long item is cut to fit its own response (`encode_pairs` cuts a pair as one).
    """
    if len(prompts) != len(responses):
        raise EncodingError(f"{len(prompts)} prompts but {len(responses)} responses")
    return _encode(tokenizer, prompts, [responses], conversational, max_length, min_prompt_tokens)[0]


def encode_pairs(
    tokenizer,
    prompts: Sequence[Field],
    chosen: Sequence[Field],
    rejected: Sequence[Field],
    *,
    conversational: bool,
    max_length: int | None,
    min_prompt_tokens: int | None = None,
) -> tuple[Encoded, Encoded]:
    """Chosen and rejected of each pair under ONE context: the same prompt ids, cut (when the
    pair is too long) to fit the longer response, so a margin compares like with like."""
    if not len(prompts) == len(chosen) == len(rejected):
        raise EncodingError(f"{len(prompts)} prompts, {len(chosen)} chosen and {len(rejected)} rejected responses")
    chosen_enc, rejected_enc = _encode(
        tokenizer, prompts, [chosen, rejected], conversational, max_length, min_prompt_tokens
    )
    return chosen_enc, rejected_enc


def _encode(tokenizer, prompts, sides, conversational, max_length, min_prompt_tokens) -> list[Encoded]:
    """Joint tokenization of each prompt with the response of every side, then one cut per item."""
    if conversational:
        contexts, joints, empty = _chat_token_ids(tokenizer, prompts, sides)
    else:
        contexts, joints, empty = _plain_token_ids(tokenizer, prompts, sides)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    out: list[tuple[list, list, list, list]] = [([], [], [], []) for _ in sides]
    for i, context in enumerate(contexts):
        side_joints = [joint[i] for joint in joints]
        keep = min(_common_prefix(context, joint) for joint in side_joints)
        responses = [joint[keep:] for joint in side_joints]
        moved = keep < len(context)
        context = list(bos) if empty[i] else context[:keep]
        truncated = False
        if max_length is not None and len(context) + max(map(len, responses)) > max_length:
            header = 0 if not context else _header_length(tokenizer, prompts[i], context, conversational, empty[i])
            floor = max_length // 2 if min_prompt_tokens is None else min_prompt_tokens
            context, responses = _fit(context, responses, header, max_length, floor)
            truncated = True
        for side, response in enumerate(responses):
            out[side][0].append(context)
            out[side][1].append(response)
            out[side][2].append(truncated)
            out[side][3].append(moved and not empty[i])
    return [Encoded(p, r, np.array(t, dtype=bool), np.array(m, dtype=bool)) for p, r, t, m in out]


def _chat_token_ids(tokenizer, prompts, sides):
    """Context and joint ids through the chat template (special tokens as the template writes them)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise EncodingError(
            "conversational data needs a chat template, and this tokenizer has none",
            hint="use the tokenizer of the chat model that was trained on this template",
        )
    prompt_texts, full_texts = [], [[] for _ in sides]
    for i, prompt in enumerate(prompts):
        rendered_prompt = list(prompt) or EMPTY_CONTEXT_PROBE
        prompt_text = tokenizer.apply_chat_template(rendered_prompt, add_generation_prompt=True, tokenize=False)
        prompt_texts.append(prompt_text)
        for side, responses in enumerate(sides):
            full_text = tokenizer.apply_chat_template(rendered_prompt + list(responses[i]), tokenize=False)
            if not full_text.startswith(prompt_text):
                raise EncodingError(
                    "the chat template renders the prompt differently when a response follows, so the "
                    f"response cannot be cut out of the text: prompt alone {prompt_text[-80:]!r}, "
                    f"with the response {full_text[: len(prompt_text)][-80:]!r}",
                    hint="use a template whose add_generation_prompt output is a prefix of the full "
                    "conversation (templates that drop reasoning or rewrite earlier turns are not)",
                )
            full_texts[side].append(full_text)
    contexts = _tokenize(tokenizer, prompt_texts)
    joints = [_tokenize(tokenizer, texts) for texts in full_texts]
    return contexts, joints, [not prompt for prompt in prompts]


def _plain_token_ids(tokenizer, prompts, sides):
    """Standard text: the tokenizer's leading special tokens once, prompt + response tokenized as
    one text, then its closing special tokens (or EOS); text with a rendered template as written."""
    lead, close = _special_tokens_around(tokenizer)
    plain_prompts = _tokenize(tokenizer, list(prompts))
    as_written = [rendered_template(prompt) is not None for prompt in prompts]
    leads = [[] if written or ids[: len(lead)] == lead else lead for ids, written in zip(plain_prompts, as_written)]
    contexts = [first + ids for first, ids in zip(leads, plain_prompts)]
    joints = []
    for responses in sides:
        plain_joints = _tokenize(tokenizer, [p + r for p, r in zip(prompts, responses)])
        joints.append(
            [
                first + ids + ([] if written or (close and ids[-len(close) :] == close) else close)
                for first, ids, written in zip(leads, plain_joints, as_written)
            ]
        )
    return contexts, joints, [False] * len(contexts)


def _special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (BOS; EOS with add_eos_token, SEP, ...),
    or EOS after it when it puts nothing there (as TRL appends it to standard text)."""
    probe = "dmtui probe"
    plain = tokenizer(probe, add_special_tokens=False, verbose=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True, verbose=False)["input_ids"]
    start = next((k for k in range(len(full) - len(plain) + 1) if full[k : k + len(plain)] == plain), 0)
    lead, close = list(full[:start]), list(full[start + len(plain) :])
    if not close and tokenizer.eos_token_id is not None:
        close = [tokenizer.eos_token_id]
    return lead, close


def _header_length(tokenizer, prompt, context: list[int], conversational: bool, empty: bool) -> int:
    """How many leading context tokens a cut must keep: BOS, and for conversations the template's
    header (everything before the first message's text: BOS, a system prompt the template adds,
    the first role marker)."""
    if empty:
        return len(context)
    if not conversational:
        lead, _ = _special_tokens_around(tokenizer)
        return len(lead) if context[: len(lead)] == lead else 0
    probe = [dict(prompt[0], content=HEADER_MARKER), *prompt[1:]]
    text = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    at = text.find(HEADER_MARKER)
    if at < 0:  # the template does not write the first message as given: keep its special tokens
        specials = set(tokenizer.all_special_ids)
        return next((k for k, token in enumerate(context) if token not in specials), len(context))
    return _common_prefix(_tokenize(tokenizer, [text[:at]])[0], context)


def _fit(context: list[int], responses: list[list[int]], header: int, max_length: int, floor: int):
    """Cut one context (and the responses it serves) to max_length tokens: the context loses tokens
    from the left after its header, down to `floor` tokens, then the responses lose their ends."""
    longest = max(map(len, responses))
    keep = min(len(context), max(max_length - longest, floor))
    keep = min(max(keep, min(header, len(context))), max_length - 1)
    head = min(header, keep)
    context = context[:head] + context[len(context) - (keep - head) :]
    room = max_length - keep
    return context, [response[:room] for response in responses]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


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
    repeat its KV cache for the two responses and run only the responses again, when that
    saves work: the shorter response is padded to the longer one there, so a pair shares
    only when its responses differ in length by less than its prompt (`_worth_sharing`).
    Other pairs (short prompts with long responses of unequal length, prompts cut
    differently by truncation, empty context) and architectures on the full-forward path
    go through `response_logprobs`, each side sorted by its own length.
    """
    if len(chosen) != len(rejected):
        raise EncodingError(f"{len(chosen)} chosen but {len(rejected)} rejected encodings")
    n = len(chosen)
    scorer = _Scorer(model)
    shared = [
        i
        for i in range(n)
        if scorer.can_share_prompt
        and chosen.prompt_ids[i] == rejected.prompt_ids[i]
        and _worth_sharing(len(chosen.prompt_ids[i]), len(chosen.response_ids[i]), len(rejected.response_ids[i]))
    ]
    results = [np.zeros((2, n), dtype=np.float64) for _ in range(2)]  # sums, counts x (chosen, rejected)
    reporter = Reporter("log-probs", 2 * n, progress, cancel, unit="sequences")
    shared_set = set(shared)
    rest = [i for i in range(n) if i not in shared_set]
    if rest:
        for side, encoded in enumerate((chosen, rejected)):
            part = encoded.subset(rest)
            lengths = [len(p) + len(r) for p, r in zip(part.prompt_ids, part.response_ids)]

            def score_rest(batch: list[int], side=side, part=part) -> None:
                rows = [(part.prompt_ids[i], part.response_ids[i]) for i in batch]
                items = [rest[i] for i in batch]
                results[0][side, items], results[1][side, items] = scorer.score(rows, "right")

            run_batches(range(len(rest)), lengths, batch_tokens, score_rest, reporter, per_item=1)
    pair_cost = [
        len(chosen.prompt_ids[i]) + 2 * max(len(chosen.response_ids[i]), len(rejected.response_ids[i]))
        if i in shared_set
        else 0
        for i in range(n)
    ]

    def score_shared(batch: list[int]) -> None:
        rows = [(chosen.prompt_ids[i], chosen.response_ids[i], rejected.response_ids[i]) for i in batch]
        sums, counts = scorer.score_shared_prompt(rows)
        results[0][:, batch], results[1][:, batch] = sums, counts

    run_batches(shared, pair_cost, batch_tokens, score_shared, reporter, per_item=2)
    reporter.finish()
    return (
        LogprobResult(results[0][0], results[1][0], chosen.truncated.copy()),
        LogprobResult(results[0][1], results[1][1], rejected.truncated.copy()),
    )


def _worth_sharing(prompt: int, chosen: int, rejected: int) -> bool:
    """Shared: prompt + 2 * max(responses) tokens; apart: 2 * prompt + both responses. Sharing is
    cheaper when the responses differ in length by less than the prompt."""
    return prompt > 0 and chosen > 0 and rejected > 0 and abs(chosen - rejected) < prompt


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


def needs_full_forward(model) -> bool:
    """True when the LM head (and a final soft-cap) does not give the model's logits (see LOGIT_TRANSFORM_ATTRS)."""
    head, decoder = model.get_output_embeddings(), model.get_decoder()
    if head is None or decoder is None or decoder is model:
        return True
    return any(
        getattr(c, name, None) not in no_ops for c in _configs(model) for name, no_ops in LOGIT_TRANSFORM_ATTRS.items()
    )


def _configs(model) -> list:
    config = model.config
    return [config] + ([config.get_text_config()] if hasattr(config, "get_text_config") else [])


def _softcap(model) -> float | None:
    caps = [getattr(c, SOFTCAP_ATTR, None) for c in _configs(model)]
    return next((float(cap) for cap in caps if cap), None)


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
        self.softcap = _softcap(model)
        self._head_fp32: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.cache_kwarg = next((k for k in ("cache", "past_key_values") if k in params), None)
        self.can_share_prompt = not self.full_forward and self.cache_kwarg is not None and self.takes_position_ids

    @torch.inference_mode()
    def score_shared_prompt(self, rows: list[tuple[list[int], list[int], list[int]]]):
        """(prompt, chosen, rejected) rows: prompt once (left-padded), KV cache x2, responses right-padded."""
        assert self.cache_kwarg is not None, "called only when can_share_prompt"
        width = max(len(p) for p, _, _ in rows)
        prompt_ids = torch.zeros(len(rows), width, dtype=torch.long)
        prompt_mask = torch.zeros_like(prompt_ids)
        for i, (prompt, _, _) in enumerate(rows):
            prompt_ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            prompt_mask[i, width - len(prompt) :] = 1
        first = self.body(
            input_ids=prompt_ids.to(self.device),
            attention_mask=prompt_mask.to(self.device),
            position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0).to(self.device),
            use_cache=True,
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
            use_cache=True,
            **{self.cache_kwarg: cache},
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
        """Log-probs of `targets` from hidden states, through the LM head in fp32 a chunk at a time.

        In bf16 the logits themselves would be rounded to 8 bits of mantissa (about 0.1 nat
        at a logit of 30, per token); the matmul runs in fp32 on an fp32 copy of the head,
        made once per call (vocab x hidden x 4 bytes: 2.1 GB for Llama-3-8B).
        """
        weight, bias = self._fp32_head()
        chunk = max(1, LOGITS_CHUNK_ELEMENTS // weight.shape[0])
        parts = []
        for start in range(0, hidden.shape[0], chunk):
            logits = torch.nn.functional.linear(hidden[start : start + chunk].float(), weight, bias)
            if self.softcap is not None:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            parts.append(_target_logps(logits, targets[start : start + chunk]))
        return torch.cat(parts)

    def _fp32_head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._head_fp32 is None:
            bias = getattr(self.head, "bias", None)
            self._head_fp32 = (self.head.weight.float(), None if bias is None else bias.float())
        return self._head_fp32

    def _full_forward(self, inputs, rows, columns, targets, width) -> torch.Tensor:
        keep = width - int(columns.min()) if self.takes_logits_to_keep else width
        extra = {"logits_to_keep": keep} if self.takes_logits_to_keep else {}
        logits = self.model(**inputs, use_cache=False, **extra).logits
        return _target_logps(logits[rows, columns - (width - keep)].float(), targets)


def _target_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per row: cross-entropy's fused kernel (one pass for the
    normaliser, none for a [rows, vocab] log-prob tensor), 25% less head time than
    logsumexp + gather on CPU."""
    return -torch.nn.functional.cross_entropy(logits, targets, reduction="none")


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    """Ids of each text with no special token added; no warning about texts longer than the
    model (scoring cuts them itself, and counts them)."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def _buckets(order: Sequence[int], lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Cut items (already sorted longest first) into batches of at most `batch_tokens` padded tokens,
    and at most `MAX_PADDING_SHARE` of them padding (a batch of every item would pad each to the
    longest: a third of the work on real length spreads)."""
    batches: list[list[int]] = []
    current: list[int] = []
    width = real = 0
    for i in order:
        new_width = max(width, lengths[i])
        padded = new_width * (len(current) + 1)
        if current and (padded > batch_tokens or padded - real - lengths[i] > MAX_PADDING_SHARE * padded):
            batches.append(current)
            current, new_width, real = [], lengths[i], 0
        current.append(i)
        width, real = new_width, real + lengths[i]
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
