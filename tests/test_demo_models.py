"""The demo models: saved like real checkpoints, trained for real, reproducible, atomic."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from core.demo.models import (
    EVAL_STREAM,
    DemoModelsConfig,
    build_demo_models,
    completion_loss,
    demo_models_dir,
    ensure_demo_models,
    fingerprint,
    model_config,
    reward_scores,
    sft_examples,
)
from core.demo.world import (
    ResponseSampler,
    assistant,
    generate_world,
    response_features,
    user,
)
from core.errors import Cancelled

TINY = dict(
    vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
    sft_conversations=128, sft_steps=6, sft_batch_size=16,
    reward_pairs=48, reward_epochs=1.0, reward_batch_size=16, check_pairs=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def loaded(demo_models):
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    return (
        AutoTokenizer.from_pretrained(demo_models.policy),
        AutoModelForCausalLM.from_pretrained(demo_models.policy).eval(),
        AutoModelForSequenceClassification.from_pretrained(demo_models.reward).eval(),
    )


def test_loads_back_through_auto_classes(demo_models, loaded):
    from transformers import AutoTokenizer

    tokenizer, policy, reward = loaded
    assert AutoTokenizer.from_pretrained(demo_models.tokenizer).get_vocab() == tokenizer.get_vocab()
    assert type(policy).__name__ == "LlamaForCausalLM"
    assert type(reward).__name__ == "LlamaForSequenceClassification" and reward.config.num_labels == 1
    assert reward.config.pad_token_id == tokenizer.pad_token_id
    assert demo_models.root == demo_models_dir(DemoModelsConfig(cache_dir=str(demo_models.root.parents[1])))


def test_chat_template_round_trip(loaded):
    tokenizer, _, _ = loaded
    conversation = user("how do I grow tomatoes ?") + assistant("Pull weeds while they are small. Good luck!")
    prompt_ids = tokenizer.apply_chat_template(conversation[:1], add_generation_prompt=True, tokenize=True)
    full_ids = tokenizer.apply_chat_template(conversation, tokenize=True)
    prompt_ids = list(getattr(prompt_ids, "input_ids", prompt_ids))
    full_ids = list(getattr(full_ids, "input_ids", full_ids))
    assert full_ids[: len(prompt_ids)] == prompt_ids
    assert full_ids[-1] == tokenizer.eos_token_id and full_ids[0] == tokenizer.bos_token_id
    response = tokenizer.decode(full_ids[len(prompt_ids) :], skip_special_tokens=True)
    assert response == conversation[1]["content"]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert text == "<|bos|><|user|>how do I grow tomatoes ?<|eos|><|assistant|>" + response + "<|eos|>"


def test_demo_texts_fit_in_64_tokens(loaded):
    tokenizer, _, _ = loaded
    rows, _ = generate_world(DemoModelsConfig().world)
    lengths = [len(tokenizer(r[side][0]["content"])["input_ids"]) for r in rows for side in ("chosen", "rejected")]
    assert max(lengths) < 64


def test_policy_learned_something(demo_models, loaded):
    from transformers import LlamaForCausalLM

    tokenizer, policy, _ = loaded
    config = DemoModelsConfig()
    held_out = sft_examples(config, tokenizer, 64, EVAL_STREAM)
    torch.manual_seed(0)
    untrained = LlamaForCausalLM(model_config(config, tokenizer)).eval()
    trained_loss = completion_loss(policy, held_out, tokenizer.pad_token_id)
    assert trained_loss < completion_loss(untrained, held_out, tokenizer.pad_token_id) / 3
    assert demo_models.metrics["sft_loss_final"] < demo_models.metrics["sft_loss_init"]


def test_policy_generates_demo_like_text(loaded):
    tokenizer, policy, _ = loaded
    prompt = "how do I grow tomatoes ?"
    inputs = tokenizer.apply_chat_template(user(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True)
    torch.manual_seed(0)
    out = policy.generate(**inputs, do_sample=True, temperature=0.7, max_new_tokens=64, num_return_sequences=8)
    texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    features = [response_features(prompt, text) for text in texts]
    sentences = sum(sum(f.values()) for f in features)
    assert sentences > 0 and sum(f["unknown"] for f in features) / sentences < 0.25


def test_reward_model_prefers_good_answers_to_toxic_ones(loaded):
    tokenizer, _, reward = loaded
    sampler = ResponseSampler(seed=99, stream=7)
    good, toxic = [], []
    for _ in range(64):
        topic, prompt = sampler.prompt()
        good.append(user(prompt) + assistant(sampler.good_response(topic)))
        toxic.append(user(prompt) + assistant(sampler.toxic_response(topic)))
    good_scores, toxic_scores = reward_scores(reward, tokenizer, good), reward_scores(reward, tokenizer, toxic)
    assert sum(good_scores) / 64 > sum(toxic_scores) / 64
    assert sum(g > t for g, t in zip(good_scores, toxic_scores)) >= 48


def test_reward_margins_track_the_oracle(demo_models):
    assert demo_models.metrics["reward_oracle_spearman"] > 0.5


def test_tiny_build_is_reproducible_and_cached(tmp_path):
    first = build_demo_models(DemoModelsConfig(cache_dir=str(tmp_path / "a"), **TINY))
    second = build_demo_models(DemoModelsConfig(cache_dir=str(tmp_path / "b"), **TINY))
    assert first.root.name == second.root.name
    for part in ("policy", "reward"):
        left = load_file(first.root / part / "model.safetensors")
        right = load_file(second.root / part / "model.safetensors")
        assert left.keys() == right.keys()
        assert all(torch.equal(left[name], right[name]) for name in left)
    stamp = (first.root / "build.json").stat().st_mtime_ns
    again = ensure_demo_models(DemoModelsConfig(cache_dir=str(tmp_path / "a"), **TINY))
    assert again.root == first.root and (first.root / "build.json").stat().st_mtime_ns == stamp


def test_cancelled_build_leaves_no_folder(tmp_path):
    cancel = threading.Event()

    def cancel_once_training(report):
        if report.stage == "policy":
            cancel.set()

    config = DemoModelsConfig(cache_dir=str(tmp_path), **TINY)
    with pytest.raises(Cancelled):
        build_demo_models(config, progress=cancel_once_training, cancel=cancel)
    assert list((tmp_path / "demo-models").iterdir()) == []
    assert not demo_models_dir(config).exists()


def test_a_mixed_precision_build_trains_and_has_its_own_cache(tmp_path):
    assert fingerprint(DemoModelsConfig()) == "a56501892195fd0d", "the bundled build's cache stays valid"
    config = DemoModelsConfig(cache_dir=str(tmp_path), dtype="bfloat16", **TINY)
    assert fingerprint(config) != fingerprint(DemoModelsConfig(**TINY))
    assert fingerprint(replace(config, device="cuda:1")) == fingerprint(replace(config, device="cuda"))
    built = build_demo_models(config)
    assert built.root == demo_models_dir(config)
    assert built.metrics["sft_loss_final"] < built.metrics["sft_loss_init"]
    weights = load_file(built.root / "reward" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}, "fp32 weights, bf16 compute"
