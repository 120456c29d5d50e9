"""The log-prob engine against a naive per-sequence transformers computation.

Models and tokenizers are built here, offline: a byte-level BPE trained on a small
corpus (wrapped in PreTrainedTokenizerFast with a chat template) and a tiny seeded
LlamaForCausalLM, saved with save_pretrained and loaded back through core.models.load.
"""

from __future__ import annotations

import copy
import random
import threading

import numpy as np
import pytest
import torch
from tiny_models import (
    conversational_items,
    naive_logprobs,
    random_text,
    save_tiny_llama,
    standard_items,
)
from transformers import PreTrainedTokenizerFast

from core.errors import Cancelled
from core.models import logprobs
from core.models.load import load_causal_lm, load_tokenizer
from core.models.logprobs import (
    Encoded,
    encode,
    needs_full_forward,
    pair_logprobs,
    response_logprobs,
    token_identical_pairs,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model, tokenizer) saved to disk and loaded back through core.models.load."""
    folder = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    model = load_causal_lm(folder, device="cpu", dtype=torch.float32)
    return model, load_tokenizer(folder)


def test_a_merge_across_the_boundary_moves_it_back_like_trl(saved):
    """Joint tokenization is what the model reads; where a merge crosses the boundary the
    merged token is scored as response (TRL 1.x does the same) and the item is flagged."""
    _, tokenizer = saved
    prompt, response = "the cat zorb", "lat ran"
    joint = tokenizer(prompt + response)["input_ids"]
    prompt_alone = tokenizer(prompt)["input_ids"]
    assert joint[: len(prompt_alone)] != prompt_alone, "corpus should make a merge cross the boundary"
    encoded = encode(tokenizer, [prompt, "the cat"], [response, " ran"], conversational=False, max_length=None)
    assert encoded.boundary_moved.tolist() == [True, False]
    assert encoded.prompt_ids[0] + encoded.response_ids[0] == joint + [tokenizer.eos_token_id]
    assert encoded.prompt_ids[0] == prompt_alone[: len(encoded.prompt_ids[0])]
    assert tokenizer.decode(encoded.response_ids[0], skip_special_tokens=True).endswith(response)


def test_conversational_encoding_cuts_the_response_out_of_the_template(saved):
    _, tokenizer = saved
    prompts, responses = [[{"role": "user", "content": "hi"}]], [[{"role": "assistant", "content": "yo"}]]
    encoded = encode(tokenizer, prompts, responses, conversational=True, max_length=None)
    assert tokenizer.decode(encoded.prompt_ids[0]) == "<s><|user|>hi</s><|assistant|>"
    assert tokenizer.decode(encoded.response_ids[0]) == "yo</s>"
    assert encoded.prompt_ids[0].count(tokenizer.bos_token_id) == 1


def test_a_template_that_rewrites_the_prompt_is_a_clear_error(saved):
    _, tokenizer = saved
    broken = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer, eos_token="</s>",
        chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}",
    )
    with pytest.raises(logprobs.EncodingError, match="chat template renders the prompt differently"):
        encode(broken, [[{"role": "user", "content": "hi"}]], [[{"role": "assistant", "content": "yo"}]],
               conversational=True, max_length=None)


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("conversational", [False, True])
def test_engine_equals_naive_computation(saved, padding_side, conversational):
    model, tokenizer = saved
    prompts, responses = conversational_items(24) if conversational else standard_items(24)
    encoded = encode(tokenizer, prompts, responses, conversational=conversational, max_length=None)
    lengths = {len(p) + len(r) for p, r in zip(encoded.prompt_ids, encoded.response_ids)}
    assert len(lengths) > 10, "items should have mixed lengths"
    result = response_logprobs(model, encoded, batch_tokens=300, padding_side=padding_side)
    expected_sums, expected_counts = naive_logprobs(model, encoded)
    assert result.logprob_sum.dtype == np.float64 and result.n_tokens.dtype == np.float64
    np.testing.assert_allclose(result.logprob_sum, expected_sums, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(result.n_tokens, expected_counts)
    assert result.n_tokens.min() > 0


def test_padding_sides_agree_with_one_big_batch(saved):
    model, tokenizer = saved
    encoded = encode(tokenizer, *standard_items(12), conversational=False, max_length=None)
    one_batch = response_logprobs(model, encoded, batch_tokens=10**6, padding_side="left")
    many = response_logprobs(model, encoded, batch_tokens=64, padding_side="right")
    np.testing.assert_allclose(one_batch.logprob_sum, many.logprob_sum, atol=1e-4, rtol=0)


def test_empty_context_scores_the_response_alone(saved):
    model, tokenizer = saved
    responses = [" the cat sat on the mat", " a fox"]
    with_bos = encode(tokenizer, ["", ""], responses, conversational=False, max_length=None)
    assert with_bos.prompt_ids == [[tokenizer.bos_token_id]] * 2
    no_bos = Encoded([[], []], with_bos.response_ids, np.zeros(2, dtype=bool))
    for encoded in (with_bos, no_bos):
        result = response_logprobs(model, encoded)
        expected_sums, expected_counts = naive_logprobs(model, encoded)
        np.testing.assert_allclose(result.logprob_sum, expected_sums, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(result.n_tokens, expected_counts)
    assert list(response_logprobs(model, no_bos).n_tokens) == [len(r) - 1 for r in with_bos.response_ids]


def test_conversational_empty_context_works(saved):
    model, tokenizer = saved
    response = [{"role": "assistant", "content": "the cat"}]
    encoded = encode(tokenizer, [[], [{"role": "user", "content": "hi"}]], [response, response],
                     conversational=True, max_length=None)
    assert encoded.prompt_ids[0] == [tokenizer.bos_token_id]
    assert encoded.response_ids[0] == encoded.response_ids[1], "same response tokens as with a prompt"
    result = response_logprobs(model, encoded)
    np.testing.assert_allclose(result.logprob_sum, naive_logprobs(model, encoded)[0], atol=1e-4)


def test_truncation_cuts_prompt_left_after_bos_then_response_right_and_flags(saved):
    _, tokenizer = saved
    prompt, response = random_text(random.Random(5), 30, 30), " " + random_text(random.Random(6), 20, 20)
    full = encode(tokenizer, [prompt], [response], conversational=False, max_length=None)
    p, r = full.prompt_ids[0], full.response_ids[0]
    assert p[0] == tokenizer.bos_token_id
    fits = encode(tokenizer, [prompt], [response], conversational=False, max_length=len(p) + len(r))
    assert not fits.truncated[0] and fits.prompt_ids[0] == p

    prompt_cut = encode(tokenizer, [prompt], [response], conversational=False,
                        max_length=len(p) + len(r) - 3, min_prompt_tokens=0)
    assert prompt_cut.truncated[0]
    assert prompt_cut.prompt_ids[0] == p[:1] + p[4:] and prompt_cut.response_ids[0] == r

    both_cut = encode(tokenizer, [prompt], [response], conversational=False, max_length=20)
    assert both_cut.truncated[0]
    assert both_cut.prompt_ids[0] == p[:1] + p[-9:], "BOS and max_length // 2 - 1 prompt tokens kept"
    assert both_cut.response_ids[0] == r[:10]


def test_token_identical_pairs_after_truncation_are_found(saved):
    _, tokenizer = saved
    shared = " the cat sat on the mat and the dog ran far away over the hill"
    prompts = ["the quick brown fox", "the quick brown fox"]
    chosen, rejected = [shared + " red", " blue"], [shared + " blue", " red"]
    full = [encode(tokenizer, prompts, side, conversational=False, max_length=None) for side in (chosen, rejected)]
    assert not token_identical_pairs(*full).any()
    cut = [encode(tokenizer, prompts, side, conversational=False, max_length=12) for side in (chosen, rejected)]
    assert list(token_identical_pairs(*cut)) == [True, False]
    assert cut[0].truncated[0] and cut[1].truncated[0]


def test_out_of_memory_halves_the_budget_and_finishes(saved, monkeypatch):
    model, tokenizer = saved
    monkeypatch.setattr(logprobs, "MAX_PADDING_SHARE", 1.0)  # one batch of all 10 by the token budget alone
    encoded = encode(tokenizer, *standard_items(10), conversational=False, max_length=None)
    expected = response_logprobs(model, encoded, batch_tokens=10**6)
    decoder = model.get_decoder()
    real_forward = decoder.forward
    batch_rows = []

    def forward_failing_once(*args, **kwargs):
        batch_rows.append(kwargs["input_ids"].shape[0])
        if len(batch_rows) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", forward_failing_once)
    result = response_logprobs(model, encoded, batch_tokens=10**6)
    assert batch_rows[0] == 10 and max(batch_rows[1:]) < 10
    np.testing.assert_allclose(result.logprob_sum, expected.logprob_sum, atol=1e-4, rtol=0)


def test_other_runtime_errors_are_not_swallowed(saved, monkeypatch):
    model, tokenizer = saved
    encoded = encode(tokenizer, *standard_items(3), conversational=False, max_length=None)

    def broken_forward(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(model.get_decoder(), "forward", broken_forward)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        response_logprobs(model, encoded)


def test_cancel_stops_between_batches_and_progress_is_reported(saved, monkeypatch):
    model, tokenizer = saved
    encoded = encode(tokenizer, *standard_items(8), conversational=False, max_length=None)
    reports = []
    response_logprobs(model, encoded, batch_tokens=100, progress=reports.append)
    assert reports and reports[-1].done == reports[-1].total == 8

    cancel = threading.Event()
    decoder = model.get_decoder()
    real_forward = decoder.forward
    calls = []

    def forward_then_cancel(*args, **kwargs):
        calls.append(1)
        cancel.set()
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", forward_then_cancel)
    with pytest.raises(Cancelled):
        response_logprobs(model, encoded, batch_tokens=100, cancel=cancel)
    assert len(calls) == 1


def test_a_logit_scaled_architecture_uses_the_full_forward_and_matches(saved):
    from transformers import CohereConfig, CohereForCausalLM

    _, tokenizer = saved
    torch.manual_seed(0)
    config = CohereConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, logit_scale=0.5, initializer_range=0.5)
    model = CohereForCausalLM(config).eval()
    assert needs_full_forward(model)
    encoded = encode(tokenizer, *standard_items(6), conversational=False, max_length=None)
    result = response_logprobs(model, encoded, batch_tokens=200, padding_side="left")
    np.testing.assert_allclose(result.logprob_sum, naive_logprobs(model, encoded)[0], atol=1e-4, rtol=0)


def test_a_softcapped_architecture_takes_the_head_path_with_its_cap(saved):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    _, tokenizer = saved
    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=1.0,
        initializer_range=0.5,
    )
    model = Gemma2ForCausalLM(config).eval()
    assert not needs_full_forward(model)
    encoded = encode(tokenizer, *standard_items(6), conversational=False, max_length=None)
    result = response_logprobs(model, encoded, batch_tokens=200, padding_side="left")
    np.testing.assert_allclose(result.logprob_sum, naive_logprobs(model, encoded)[0], atol=1e-4, rtol=0)


def test_the_lm_head_runs_in_fp32_on_a_bf16_model(saved):
    """Logits rounded to bf16 move each token's log-prob by up to ~0.05 nat here; the fp32 head does not."""
    model, tokenizer = saved
    encoded = encode(tokenizer, *standard_items(8), conversational=False, max_length=None)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    got = response_logprobs(bf16, encoded, batch_tokens=1).logprob_sum  # one unpadded sequence per forward
    fp32_head, bf16_head = [], []
    with torch.no_grad():
        for prompt, response in zip(encoded.prompt_ids, encoded.response_ids):
            ids = torch.tensor([prompt + response])
            hidden = bf16.get_decoder()(input_ids=ids).last_hidden_state[0]
            weight = bf16.get_output_embeddings().weight
            for sums, logits in ((fp32_head, hidden.float() @ weight.float().T), (bf16_head, (hidden @ weight.T).float())):
                logp = logits.log_softmax(-1)
                sums.append(sum(float(logp[t - 1, ids[0, t]]) for t in range(len(prompt), ids.shape[1])))
    np.testing.assert_allclose(got, fp32_head, atol=1e-4, rtol=0)
    assert np.abs(np.subtract(bf16_head, fp32_head)).max() > 1e-2, "bf16 logits should visibly differ"


def test_plain_architecture_takes_the_response_only_head(saved):
    assert not needs_full_forward(saved[0])


def test_left_padding_keeps_absolute_positions_right(saved):
    """RoPE models forgive shifted positions; learned absolute positions (GPT-2) do not."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer = saved
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                        initializer_range=0.2)
    model = GPT2LMHeadModel(config).eval()
    assert not needs_full_forward(model)
    encoded = encode(tokenizer, *standard_items(8), conversational=False, max_length=None)
    result = response_logprobs(model, encoded, batch_tokens=400, padding_side="left")
    np.testing.assert_allclose(result.logprob_sum, naive_logprobs(model, encoded)[0], atol=1e-4, rtol=0)


def test_shared_prompt_pairs_equal_the_plain_path(saved, monkeypatch):
    model, tokenizer = saved
    prompts, chosen_texts = standard_items(14, seed=3)
    _, rejected_texts = standard_items(14, seed=4)
    prompts[0] = ""  # empty context: scored on the plain path
    prompts[1] = random_text(random.Random(7), 30, 30)  # truncation cuts this prompt differently per side
    chosen_texts[1], rejected_texts[1] = " a fox", " the cat sat on the mat and ran far away"
    chosen, rejected = (
        encode(tokenizer, prompts, side, conversational=False, max_length=40, min_prompt_tokens=5)
        for side in (chosen_texts, rejected_texts)
    )
    assert chosen.prompt_ids[1] != rejected.prompt_ids[1]
    worth_sharing = sum(
        len(p) > 0 and p == q and abs(len(c) - len(r)) < len(p)
        for p, q, c, r in zip(chosen.prompt_ids, rejected.prompt_ids, chosen.response_ids, rejected.response_ids))
    assert 0 < worth_sharing < 12, "both paths are exercised"
    shared_rows = []
    score_shared_prompt = logprobs._Scorer.score_shared_prompt
    monkeypatch.setattr(logprobs._Scorer, "score_shared_prompt",
                        lambda self, rows: shared_rows.extend(rows) or score_shared_prompt(self, rows))
    reports = []
    shared = pair_logprobs(model, chosen, rejected, batch_tokens=300, progress=reports.append)
    assert len(shared_rows) == worth_sharing, "a prompt is shared only where it saves work"
    for got, encoded in zip(shared, (chosen, rejected)):
        plain = response_logprobs(model, encoded)
        np.testing.assert_allclose(got.logprob_sum, plain.logprob_sum, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(got.n_tokens, plain.n_tokens)
        np.testing.assert_array_equal(got.truncated, encoded.truncated)
    assert reports[-1].done == reports[-1].total == 28


def test_a_batch_stops_growing_at_an_eighth_of_padding():
    assert logprobs._buckets([0, 1, 2, 3], [100, 100, 50, 50], 10**6) == [[0, 1], [2, 3]]
    assert logprobs._buckets([0, 1, 2], [100, 95, 90], 10**6) == [[0, 1, 2]]
    assert logprobs._buckets([0, 1, 2], [100, 95, 90], 200) == [[0, 1], [2]], "the token budget still applies"
