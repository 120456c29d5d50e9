"""The engine on realistic architectures: engine == naive in fp32 on CPU.

Each model is random-initialised, offline, from its family's real config scaled down
(same head layout ratios, RoPE settings, biases, windows, caps and tying; fewer and
narrower layers, a small vocabulary padded past the tokenizer's as real checkpoints pad
it), and reads the tokens of its family's tokenizer (tests/tokenizer_families.py):

- Llama-3-8B: grouped-query attention (4 query heads per KV head), RoPE theta 500k with
  llama3 scaling (factor 8), untied head;
- Qwen2-0.5B: bias on q/k/v, 7 query heads per KV head, theta 1e6, tied embeddings;
- Mistral-7B-v0.1: sliding-window attention (a window shorter than the sequences here);
- Gemma-2-2B: attention and final logit soft-capping, alternating sliding/global layers,
  query_pre_attn_scalar, scaled embeddings, tied embeddings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import naive_logprobs
from tokenizer_families import build, ultrafeedback_pairs

from core.models.logprobs import encode_pairs, needs_full_forward, pair_logprobs, response_logprobs

WINDOW = 12


def llama3(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=224, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        initializer_range=0.2,
    )
    return LlamaForCausalLM(config)


def qwen2(vocab: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab, hidden_size=56, intermediate_size=304, num_hidden_layers=2, num_attention_heads=7,
        num_key_value_heads=1, max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, initializer_range=0.2,
    )
    return Qwen2ForCausalLM(config)


def mistral(vocab: int):
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=224, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=1024, sliding_window=WINDOW, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, initializer_range=0.2,
    )
    return MistralForCausalLM(config)


def gemma2(vocab: int):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW,
        final_logit_softcapping=5.0, attn_logit_softcapping=50.0, tie_word_embeddings=True,
        max_position_embeddings=1024, initializer_range=0.5,
    )
    return Gemma2ForCausalLM(config)


ARCHITECTURES = {"llama3": (llama3, "llama3"), "qwen2": (qwen2, "chatml"), "mistral": (mistral, "sentencepiece"),
                 "gemma2": (gemma2, "sentencepiece")}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def setup(request):
    make, family = ARCHITECTURES[request.param]
    tokenizer = build(family)
    torch.manual_seed(0)
    model = make(len(tokenizer) + 13).eval()  # checkpoints pad the vocabulary past the tokenizer's
    prompts, chosen, rejected = ultrafeedback_pairs(10, seed=11)
    encoded = encode_pairs(tokenizer, prompts, chosen, rejected, conversational=True, max_length=None)
    return request.param, model, encoded


def test_every_architecture_takes_the_response_only_head(setup):
    name, model, _ = setup
    assert not needs_full_forward(model), name
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == (name in ("qwen2", "gemma2"))


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_engine_equals_naive(setup, padding_side):
    name, model, (chosen, rejected) = setup
    lengths = [len(p) + len(r) for p, r in zip(chosen.prompt_ids, chosen.response_ids)]
    assert max(lengths) > 2 * WINDOW and len(set(lengths)) > 5  # windows slide, batches pad
    for encoded in (chosen, rejected):
        result = response_logprobs(model, encoded, batch_tokens=4 * max(lengths), padding_side=padding_side)
        expected, counts = naive_logprobs(model, encoded)
        np.testing.assert_allclose(result.logprob_sum, expected, atol=1e-4, rtol=0, err_msg=name)
        np.testing.assert_array_equal(result.n_tokens, counts)


def test_shared_prompt_path_equals_naive(setup):
    name, model, (chosen, rejected) = setup
    got = pair_logprobs(model, chosen, rejected, batch_tokens=2000)
    for result, encoded in zip(got, (chosen, rejected)):
        np.testing.assert_allclose(result.logprob_sum, naive_logprobs(model, encoded)[0], atol=1e-4, rtol=0,
                                   err_msg=name)


def test_gemma_soft_cap_is_applied():
    tokenizer = build("sentencepiece")
    torch.manual_seed(0)
    capped = gemma2(len(tokenizer)).eval()
    uncapped = gemma2(len(tokenizer)).eval()
    uncapped.load_state_dict(capped.state_dict())
    uncapped.config.final_logit_softcapping = None
    chosen, _ = encode_pairs(tokenizer, *ultrafeedback_pairs(4, seed=2), conversational=True, max_length=None)
    with_cap, without = (response_logprobs(m, chosen).logprob_sum for m in (capped, uncapped))
    assert np.abs(with_cap - without).max() > 0.5, "the cap should matter at these logit sizes"
