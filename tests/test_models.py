"""Safe model loading, LoRA merging and fingerprints (tiny models built offline)."""

from __future__ import annotations

import argparse
import inspect
import json
from unittest.mock import patch

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import build_llama, save_tiny_llama, standard_items
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from core.models import load as models
from core.models.load import (
    ModelLoadError,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    model_fingerprint,
    pick_device,
    pick_dtype,
)
from core.models.logprobs import encode, response_logprobs


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("base"))


def test_cpu_defaults_and_explicit_requests():
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")
        assert pick_dtype("cpu") == torch.float32
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_dtype("cpu", "bfloat16") == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        pick_dtype("cpu", "float13")


def test_tokenizer_without_pad_token_pads_with_eos(base_dir):
    tokenizer = load_tokenizer(base_dir, padding_side="left")
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert tokenizer.padding_side == "left"


def test_pickle_only_checkpoint_is_refused_unless_allowed(base_dir, tmp_path):
    (tmp_path / "config.json").write_text((base_dir / "config.json").read_text())
    torch.save(load_file(base_dir / "model.safetensors"), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="refusing to load pickle weights") as err:
        load_causal_lm(tmp_path, device="cpu", dtype=torch.float32)
    assert "allow_pickle=True" in str(err.value)
    model = load_causal_lm(tmp_path, device="cpu", dtype=torch.float32, allow_pickle=True)
    assert isinstance(model, LlamaForCausalLM)


def test_remote_code_is_not_run_by_default(base_dir, tmp_path):
    marker = tmp_path / "EXECUTED"
    for name in ("model.safetensors", "config.json"):
        (tmp_path / name).write_bytes((base_dir / name).read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "modeling_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaForCausalLM\n\n\nclass EvilForCausalLM(LlamaForCausalLM):\n    pass\n"
    )
    assert inspect.signature(load_causal_lm).parameters["trust_remote_code"].default is False
    try:
        load_causal_lm(tmp_path, device="cpu", dtype=torch.float32)
    except ModelLoadError:
        pass  # refusing is as good as ignoring the code; running it is not
    assert not marker.exists()
    load_causal_lm(tmp_path, device="cpu", dtype=torch.float32, trust_remote_code=True)
    assert marker.exists()


def test_reward_model_needs_exactly_one_label(tmp_path):
    torch.manual_seed(0)
    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=1, eos_token_id=1)
    one, two = tmp_path / "one", tmp_path / "two"
    LlamaForSequenceClassification(LlamaConfig(num_labels=1, **small)).save_pretrained(one)
    LlamaForSequenceClassification(LlamaConfig(num_labels=2, **small)).save_pretrained(two)
    reward = load_reward_model(one, device="cpu", dtype=torch.float32)
    assert reward.config.num_labels == 1 and reward.config.pad_token_id == 1
    with pytest.raises(ModelLoadError, match="2 labels"):
        load_reward_model(two, device="cpu", dtype=torch.float32)


def test_causal_lm_checkpoint_is_not_a_reward_model(base_dir):
    with pytest.raises(ModelLoadError, match="would be random|labels"):
        load_reward_model(base_dir, device="cpu", dtype=torch.float32)


def test_lora_adapter_is_merged(base_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_causal_lm(base_dir, device="cpu", dtype=torch.float32)
    torch.manual_seed(1)
    peft_model = get_peft_model(
        build_llama(base.config.vocab_size),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path)
    adapter_config = json.loads((tmp_path / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(base_dir)
    (tmp_path / "adapter_config.json").write_text(json.dumps(adapter_config))
    expected_model = peft_model.merge_and_unload().eval()

    loaded = load_causal_lm(tmp_path, device="cpu", dtype=torch.float32)
    assert type(loaded) is LlamaForCausalLM
    tokenizer = load_tokenizer(tmp_path)
    encoded = encode(tokenizer, *standard_items(6), conversational=False, max_length=None)
    got = response_logprobs(loaded, encoded).logprob_sum
    np.testing.assert_allclose(got, response_logprobs(expected_model, encoded).logprob_sum, atol=1e-4, rtol=0)
    assert np.abs(got - response_logprobs(base, encoded).logprob_sum).max() > 1e-2, "adapter must change scores"


def test_fingerprint_is_stable_and_follows_the_weights(base_dir, tmp_path):
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((base_dir / name).read_bytes())
    first = model_fingerprint(tmp_path)
    assert first == model_fingerprint(tmp_path) and first.startswith("sha256:")
    weights = load_file(tmp_path / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] += 1.0
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert model_fingerprint(tmp_path) != first


def test_large_shards_are_hashed_by_header_size_and_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "FULL_HASH_LIMIT", 1024)
    monkeypatch.setattr(models, "EDGE_BYTES", 256)
    tensors = {"w": torch.zeros(4096)}
    save_file(tensors, tmp_path / "model.safetensors")
    first = model_fingerprint(tmp_path)
    tensors["w"][2048] = 1.0  # the middle of a large shard: the documented blind spot
    save_file(tensors, tmp_path / "model.safetensors")
    assert model_fingerprint(tmp_path) == first
    tensors["w"][-1] = 1.0
    save_file(tensors, tmp_path / "model.safetensors")
    assert model_fingerprint(tmp_path) != first


def test_hub_id_without_cache_is_id_and_revision():
    assert model_fingerprint("nobody-here/not-cached-model", revision="v1") == "hf:nobody-here/not-cached-model@v1"


def test_missing_path_says_what_to_pass(tmp_path):
    missing = tmp_path / "no-such-model"
    for call in (lambda: load_causal_lm(missing, device="cpu", dtype=torch.float32),
                 lambda: model_fingerprint(str(missing)), lambda: load_tokenizer(f"{missing}/")):
        with pytest.raises(ModelLoadError) as err:
            call()
        assert str(missing) in err.value.message and "safetensors" in (err.value.hint or "")


def _subcommand(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        parser = choices[name]
    return parser


@pytest.mark.parametrize("command", [("score",), ("iterate",), ("eval",), ("demo", "build")])
def test_every_command_that_runs_a_model_takes_device_and_dtype(command):
    from dmtui.cli import build_parser
    from dmtui.headless.device_options import DTYPES

    parser = _subcommand(build_parser(), *command)
    options = {option: action for action in parser._actions for option in action.option_strings}
    assert "--device" in options and tuple(options["--dtype"].choices) == DTYPES


def test_demo_build_resolves_its_device_and_dtype():
    from dmtui.cli import build_parser
    from dmtui.headless.demo import build_config

    parse = build_parser().parse_args
    default = build_config(parse(["demo", "build"]))
    assert (default.device, default.dtype) == ("cpu", "float32")
    with patch("torch.cuda.is_available", return_value=True), patch("torch.cuda.is_bf16_supported",
                                                                     return_value=True):
        config = build_config(parse(["demo", "build", "--device", "auto", "--dtype", "auto"]))
    assert (config.device, config.dtype) == ("cuda", "bfloat16")
    config = build_config(parse(["demo", "build", "--dtype", "float16"]))
    assert (config.device, config.dtype) == ("cpu", "float16")
