"""Token-exact encoding (core.models.logprobs.encode / encode_pairs) on the tokenizer families users bring.

Every family of tests/tokenizer_families.py, on UltraFeedback-like conversations,
HH-RLHF-like standard text and HH dialogues turned into conversations, against the naive
joint tokenization written there; then the engine's log-probs against a naive forward
over exactly those tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import build_llama, naive_logprobs
from tokenizer_families import (
    FAMILIES,
    build,
    hh_conversations,
    hh_pairs,
    reference_encoding,
    ultrafeedback_pairs,
)

from core.models.logprobs import Encoded, encode, encode_pairs, pair_logprobs

SHAPES = {"ultrafeedback": (ultrafeedback_pairs, True), "hh-text": (hh_pairs, False),
          "hh-conversations": (hh_conversations, True)}


@pytest.fixture(scope="module", params=FAMILIES)
def tokenizer(request):
    return build(request.param)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def reference_or_moved(tokenizer, prompt, response) -> tuple[list[int], list[int], bool]:
    """The reference encoding; where the context is not a prefix, the joint ids cut where they diverge."""
    try:
        context, tail = reference_encoding(tokenizer, prompt, response)
        return context, tail, False
    except AssertionError:
        pass
    if isinstance(prompt, list):
        context = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        joint = tokenizer.apply_chat_template(prompt + response, tokenize=True)
        context = list(context["input_ids"] if hasattr(context, "keys") else context)
        joint = list(joint["input_ids"] if hasattr(joint, "keys") else joint)
    else:
        bos = [tokenizer.bos_token_id] if tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id else []
        context = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        joint = bos + tokenizer(prompt + response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    k = common_prefix(context, joint)
    return context[:k], joint[k:], True


@pytest.mark.parametrize("shape", SHAPES)
def test_response_tokens_are_the_suffix_of_the_joint_tokenization(tokenizer, shape):
    make, conversational = SHAPES[shape]
    prompts, chosen, _ = make(40)
    encoded = encode(tokenizer, prompts, chosen, conversational=conversational, max_length=None)
    for i, (prompt, response) in enumerate(zip(prompts, chosen)):
        context, tail, moved = reference_or_moved(tokenizer, prompt, response)
        assert encoded.prompt_ids[i] == context, f"item {i}"
        assert encoded.response_ids[i] == tail, f"item {i}"
        assert encoded.boundary_moved[i] == moved
    assert not encoded.truncated.any()


def test_a_dummy_prefix_tokenizer_scores_what_follows_the_prompt_not_the_response_alone():
    """The issue's case: Metaspace with a dummy prefix puts "▁Sure" on a response tokenized alone,
    where the conversation has "S", "ure" after "[/INST]"."""
    tokenizer = build("sentencepiece")
    prompt = [{"role": "user", "content": "How do I bake bread?"}]
    response = [{"role": "assistant", "content": "Sure, measure the flour first."}]
    encoded = encode(tokenizer, [prompt], [response], conversational=True, max_length=None)
    context, tail = reference_encoding(tokenizer, prompt, response)
    assert encoded.response_ids[0] == tail
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(prompt + response, tokenize=False)
    alone = tokenizer(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    assert alone != tail and tokenizer.convert_ids_to_tokens(alone[:1]) == ["▁Sure"]


def test_a_merge_across_the_boundary_moves_it_back_and_is_flagged():
    tokenizer = build("llama3")
    prompts, responses = ["How do I bake bread?", "How do I bake bread"], ["\n\nSure.", " Sure."]
    encoded = encode(tokenizer, prompts, responses, conversational=False, max_length=None)
    assert encoded.boundary_moved.tolist() == [True, False]
    joint = tokenizer(prompts[0] + responses[0])["input_ids"] + [tokenizer.eos_token_id]
    assert encoded.prompt_ids[0] + encoded.response_ids[0] == joint  # nothing lost, nothing scored twice
    assert tokenizer.convert_ids_to_tokens(encoded.response_ids[0][:1]) == ["?ĊĊ"]


def test_pairs_share_the_earlier_boundary():
    tokenizer = build("llama3")
    chosen, rejected = encode_pairs(tokenizer, ["How do I bake bread?"], ["\n\nSure."], [" No."],
                                    conversational=False, max_length=None)
    assert chosen.prompt_ids == rejected.prompt_ids
    assert chosen.boundary_moved[0] and rejected.boundary_moved[0]
    assert tokenizer.decode(rejected.response_ids[0]) == "? No.<|eot_id|>"


@pytest.mark.parametrize("family", FAMILIES)
def test_bos_appears_once_and_eos_only_at_the_end(family):
    tokenizer = build(family)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for make, conversational in SHAPES.values():
        prompts, chosen, _ = make(12)
        encoded = encode(tokenizer, prompts, chosen, conversational=conversational, max_length=None)
        for context, response in zip(encoded.prompt_ids, encoded.response_ids):
            ids = context + response
            if bos is not None and not (conversational and family.startswith("sentencepiece")):
                assert ids.count(bos) == 1 and ids[0] == bos  # [INST] templates write BOS per user turn
            if not conversational:  # conversations: the template writes every end of turn
                assert eos not in context, "EOS inside the prompt (add_eos_token)"
                assert response[-1] == eos and response.count(eos) == 1


@pytest.mark.parametrize("family, text", [
    ("llama3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("llama3", "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
               "\n\n"),
    ("chatml", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
    ("sentencepiece", "<s>[INST] Hi [/INST]"),
    ("sentencepiece_eos", "[INST] Hi [/INST]"),
])
def test_text_with_a_rendered_template_is_scored_as_written(family, text):
    tokenizer = build(family)
    response = "Sure." + ("<|eot_id|>" if family == "llama3" else "")
    encoded = encode(tokenizer, [text], [response], conversational=False, max_length=None)
    written = tokenizer(text + response, add_special_tokens=False)["input_ids"]
    assert encoded.prompt_ids[0] + encoded.response_ids[0] == written
    assert encoded.prompt_ids[0] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_add_eos_token_puts_no_eos_inside_the_prompt():
    tokenizer = build("sentencepiece_eos")
    assert tokenizer("Hi")["input_ids"][-1] == tokenizer.eos_token_id  # the tokenizer does add it
    encoded = encode(tokenizer, ["\n\nHuman: Hi\n\nAssistant:"], [" Sure."], conversational=False, max_length=None)
    assert tokenizer.eos_token_id not in encoded.prompt_ids[0]
    assert encoded.response_ids[0][-1] == tokenizer.eos_token_id
    assert encoded.response_ids[0].count(tokenizer.eos_token_id) == 1


# Truncation: one context per pair ------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_a_long_pair_keeps_one_context_sized_by_the_longer_response(tokenizer, shape):
    make, conversational = SHAPES[shape]
    prompts, chosen, rejected = make(30, seed=5)
    full_c, full_r = encode_pairs(tokenizer, prompts, chosen, rejected, conversational=conversational,
                                  max_length=None)
    totals = [len(c) + max(len(rc), len(rr))
              for c, rc, rr in zip(full_c.prompt_ids, full_c.response_ids, full_r.response_ids)]
    max_length = int(np.median(totals))  # about half the pairs are too long
    floor = max_length // 4
    cut_c, cut_r = encode_pairs(tokenizer, prompts, chosen, rejected, conversational=conversational,
                                max_length=max_length, min_prompt_tokens=floor)
    assert cut_c.prompt_ids == cut_r.prompt_ids, "chosen and rejected scored under different contexts"
    assert cut_c.truncated.tolist() == cut_r.truncated.tolist()
    assert cut_c.truncated.any() and not cut_c.truncated.all()
    for i in range(len(prompts)):
        context, full_context = cut_c.prompt_ids[i], full_c.prompt_ids[i]
        longer = max(len(full_c.response_ids[i]), len(full_r.response_ids[i]))
        fits = len(full_context) + longer <= max_length
        assert cut_c.truncated[i] == (not fits)
        if fits:
            assert context == full_context
            continue
        for cut, full in ((cut_c, full_c), (cut_r, full_r)):
            assert len(context) + len(cut.response_ids[i]) <= max_length
            assert full.response_ids[i][: len(cut.response_ids[i])] == cut.response_ids[i]
        assert len(context) >= min(floor, len(full_context))
        assert context[-1] == full_context[-1], "the text nearest the response survives"
        if tokenizer.bos_token_id is not None and full_context[0] == tokenizer.bos_token_id:
            assert context[0] == tokenizer.bos_token_id, "BOS lost in the cut"


def test_the_template_header_survives_a_left_cut():
    tokenizer = build("llama3")
    long_question = " ".join(["how do I bake bread"] * 30)
    prompt = [{"role": "user", "content": long_question}]
    response = [{"role": "assistant", "content": "Sure."}]
    chosen, _ = encode_pairs(tokenizer, [prompt], [response], [response], conversational=True, max_length=40,
                             min_prompt_tokens=20)
    header = tokenizer("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
                       add_special_tokens=False)["input_ids"]
    context = chosen.prompt_ids[0]
    assert chosen.truncated[0] and context[: len(header)] == header
    assert tokenizer.decode(context[-10:]).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert len(context) + len(chosen.response_ids[0]) <= 40


def test_min_prompt_tokens_keeps_context_and_cuts_the_response():
    tokenizer = build("chatml")
    prompt, response = "Plant seeds after the last frost " * 4, " " + "the cat sat on the mat " * 8
    default = encode(tokenizer, [prompt], [response], conversational=False, max_length=40)
    assert len(default.prompt_ids[0]) == 20, "default floor: max_length // 2"
    small = encode(tokenizer, [prompt], [response], conversational=False, max_length=40, min_prompt_tokens=5)
    assert len(small.prompt_ids[0]) == 5 and len(small.response_ids[0]) == 35


# The engine on these tokens -------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["ultrafeedback", "hh-text"])
def test_engine_equals_a_naive_forward_over_the_joint_tokens(tokenizer, shape):
    make, conversational = SHAPES[shape]
    prompts, chosen, rejected = make(10, seed=3)
    model = build_llama(len(tokenizer), seed=1)
    enc_c, enc_r = encode_pairs(tokenizer, prompts, chosen, rejected, conversational=conversational,
                                max_length=None)
    got = pair_logprobs(model, enc_c, enc_r, batch_tokens=600)
    pieces = [[reference_or_moved(tokenizer, p, r) for p, r in zip(prompts, responses)]
              for responses in (chosen, rejected)]
    # A pair's boundary is the earlier of its two sides: compare the pairs where neither moved.
    plain = [i for i in range(len(prompts)) if not pieces[0][i][2] and not pieces[1][i][2]]
    assert len(plain) >= 8
    for side, result in zip(pieces, got):
        reference = Encoded([side[i][0] for i in plain], [side[i][1] for i in plain], np.zeros(len(plain), bool))
        expected, counts = naive_logprobs(model, reference)
        np.testing.assert_allclose(result.logprob_sum[plain], expected, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(result.n_tokens[plain], counts)


def test_transformers_length_warning_is_silenced_where_scoring_cuts_itself():
    tokenizer = build("chatml")
    tokenizer.model_max_length = 8
    key = "sequence-length-is-longer-than-the-specified-maximum"
    encode(tokenizer, ["Plant seeds after the last frost " * 4], [" Sure."], conversational=False, max_length=16)
    assert not tokenizer.deprecation_warnings.get(key), "transformers warned about a text scoring cuts itself"
    tokenizer("Plant seeds after the last frost " * 4)
    assert tokenizer.deprecation_warnings.get(key), "the check above would not see the warning"
