"""core.scoring.scorers on the tokenizer families users bring: reward-model text, the padding self-check,
pi_1/pi_0 vocabularies, and the external margin against a naive reward model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizer_families import build, hh_pairs

from core.scoring import scorers
from core.scoring.scorers import (
    Limits,
    Pairs,
    RewardScorer,
    ScorerError,
    check_same_vocabulary,
    external_columns,
    padding_is_safe,
)


def tiny_reward_model(vocab: int, pad_id: int):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=pad_id,
                         max_position_embeddings=512, initializer_range=0.2)
    return LlamaForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def llama3_reward():
    tokenizer = build("llama3")
    return tokenizer, tiny_reward_model(len(tokenizer), tokenizer.pad_token_id)


def chat_ids(tokenizer, prompt: str, response: str) -> list[int]:
    output = tokenizer.apply_chat_template([{"role": "user", "content": prompt.strip()},
                                            {"role": "assistant", "content": response.strip()}], tokenize=True)
    return list(output["input_ids"] if hasattr(output, "keys") else output)


def test_standard_rows_reach_the_reward_model_through_its_template(llama3_reward):
    tokenizer, model = llama3_reward
    prompts, chosen, rejected = hh_pairs(6)
    rendered = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    prompts[2], chosen[2] = rendered, "Sure.<|eot_id|>"
    pairs = Pairs(prompts, chosen, rejected, conversational=False)
    templated, _ = RewardScorer(model, tokenizer, batch_tokens=512).encode_pairs(pairs, Limits(None))
    for i in (0, 1, 3):
        assert templated.prompt_ids[i] + templated.response_ids[i] == chat_ids(tokenizer, prompts[i], chosen[i])
    as_written = tokenizer(rendered + chosen[2], add_special_tokens=False)["input_ids"]
    assert templated.prompt_ids[2] + templated.response_ids[2] == as_written, "templated a second time"

    plain, _ = RewardScorer(model, tokenizer, batch_tokens=512, use_template=False).encode_pairs(pairs, Limits(None))
    expected = tokenizer(prompts[0] + chosen[0])["input_ids"] + [tokenizer.eos_token_id]
    assert plain.prompt_ids[0] + plain.response_ids[0] == expected


def test_external_margins_equal_a_naive_reward_model_on_templated_hh_text(llama3_reward):
    tokenizer, model = llama3_reward
    pairs = Pairs(*hh_pairs(12, seed=4), conversational=False)
    columns = external_columns(RewardScorer(model, tokenizer, batch_tokens=300), pairs, Limits(None),
                               lambda index, passes: None)
    with torch.no_grad():
        naive = {side: [float(model(input_ids=torch.tensor([chat_ids(tokenizer, p, r)])).logits[0, 0])
                        for p, r in zip(pairs.prompts, responses)]
                 for side, responses in (("chosen", pairs.chosen), ("rejected", pairs.rejected))}
    np.testing.assert_allclose(columns["reward_chosen"], naive["chosen"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(columns["margin"], np.subtract(naive["chosen"], naive["rejected"]), atol=2e-4)


class NoisyPadding(torch.nn.Module):
    """A stand-in reward model whose score moves by `shift` (relative) when a sequence is padded,
    and, with `broken_length`, by 1.0 for that one length only."""

    def __init__(self, dtype: torch.dtype, shift: float, broken_length: int | None = None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, dtype=dtype))
        self.shift, self.broken_length = shift, broken_length
        self.config = None

    def forward(self, input_ids, attention_mask):
        lengths = attention_mask.sum(-1).float()
        score = lengths / 10
        padded = lengths < input_ids.shape[1]
        score = torch.where(padded, score * (1 + self.shift), score)
        if self.broken_length is not None:
            score = torch.where(padded & (lengths == self.broken_length), score + 1.0, score)
        return type("Output", (), {"logits": score[:, None]})()


SEQUENCES = [[5] * n for n in (3, 9, 4, 12, 7, 20)]


@pytest.mark.parametrize("dtype, safe", [(torch.float32, False), (torch.float16, True), (torch.bfloat16, True)])
def test_the_padding_tolerance_follows_the_dtype(dtype, safe):
    assert padding_is_safe(NoisyPadding(dtype, shift=1e-2), SEQUENCES, pad_id=0) is safe
    assert padding_is_safe(NoisyPadding(dtype, shift=1e-5), SEQUENCES, pad_id=0)


def test_a_bf16_reward_model_keeps_padded_batches_that_the_fp32_tolerance_would_refuse(llama3_reward):
    """A real (tiny) Llama classifier cast to bf16 on the CPU: its padded-vs-alone gap is bf16
    rounding, above fp32's tolerance and well below bf16's, so scoring stays batched, near fp32."""
    import copy

    tokenizer, model = llama3_reward
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    pairs = Pairs(*hh_pairs(6, seed=4), conversational=False)
    fp32_scorer, bf16_scorer = (RewardScorer(m, tokenizer, batch_tokens=300) for m in (model, bf16))
    fp32, bf16_columns = (external_columns(scorer, pairs, Limits(None), lambda index, passes: None)
                          for scorer in (fp32_scorer, bf16_scorer))
    chosen, _ = fp32_scorer.encode_pairs(pairs, Limits(None))
    sequences = [p + r for p, r in zip(chosen.prompt_ids, chosen.response_ids)]
    gap = scorers.padding_gap(bf16, sequences, scorers.pad_id_of(bf16, tokenizer))
    assert scorers.PADDING_CHECK_TOLERANCE[torch.float32] < gap < scorers.PADDING_CHECK_TOLERANCE[torch.bfloat16]
    assert bf16_scorer.padding_safe is True and bf16_scorer.notes == []
    np.testing.assert_allclose(bf16_columns["reward_chosen"], fp32["reward_chosen"], atol=0.05 * (1 + np.abs(
        fp32["reward_chosen"]).max()))


def test_the_padding_check_looks_beyond_the_shortest_and_longest():
    assert scorers.PADDING_CHECK_SEQUENCES >= 3
    assert not padding_is_safe(NoisyPadding(torch.float32, shift=0.0, broken_length=9), SEQUENCES, pad_id=0)


def test_pi1_and_pi0_with_different_vocabularies_are_refused_with_both_names_and_sizes():
    llama3, chatml = build("llama3"), build("chatml")
    with pytest.raises(ScorerError) as error:
        check_same_vocabulary(llama3, chatml, "org/policy", "org/sft")
    message = error.value.message
    assert "org/policy" in message and "org/sft" in message
    assert f"{len(llama3):,} tokens" in message and f"{len(chatml):,} tokens" in message


def test_different_chat_templates_are_a_warning():
    reference, policy = build("sentencepiece"), build("sentencepiece")
    assert check_same_vocabulary(policy, reference, "p", "r") == []
    policy.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (warning,) = check_same_vocabulary(policy, reference, "p", "r")
    assert "different chat templates" in warning
