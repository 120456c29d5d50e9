"""core.generation.backends: picking transformers or vLLM, and the vLLM path against a fake `vllm` module.

vLLM is not installed on the development machine and there is no GPU, so `fake_vllm`
puts a stand-in module into sys.modules that records what dmtui hands vLLM's public
offline API (`LLM(...)`, `SamplingParams(...)`, `LLM.generate`) and answers with
deterministic outputs, and `gpu` switches torch.cuda.is_available on.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import threading
import types
import weakref

import pytest
import torch

import core.models.load
from core.demo.oracle import online_prompts
from core.errors import Cancelled
from core.generation import backends as generation_backends
from core.generation.backends import (
    GenerationBackendError,
    generate_responses,
    request_seed,
    resolve_backend,
)
from core.models.load import LoadedModels, load_tokenizer
from core.online import iteration

ANSWERS = ["Measure the flour and water first.", "Plant seeds after the last frost.", "Happy to help!"]
PROMPTS = ["how do I bake bread ?", "how do I grow tomatoes ?", "how do I bake bread ?"]
"""The first and last prompt are the same text: their samples must still draw with different seeds."""
SAMPLING = {"samples_per_prompt": 2, "temperature": 0.7, "max_new_tokens": 12, "seed": 5}


class FakeVllm:
    """What the fake `vllm` module saw: LLM arguments, prompts and sampling params per generate call, cleanups.

    A cleanup is recorded with whether every LLM was already deleted when it ran.
    """

    def __init__(self) -> None:
        self.llm_kwargs: list[dict] = []
        self.llms: list[weakref.ref] = []
        self.calls: list[tuple[list[dict], list]] = []
        self.cleanups: list[tuple[str, bool]] = []
        self.after_generate = lambda: None

    def module(self) -> tuple[types.ModuleType, types.ModuleType]:
        recorder = self

        class SamplingParams:
            def __init__(self, **kwargs) -> None:
                self.__dict__.update(kwargs)

        class LLM:
            def __init__(self, **kwargs) -> None:
                recorder.llm_kwargs.append(kwargs)
                recorder.llms.append(weakref.ref(self))
                self.tokenizer = load_tokenizer(kwargs["model"])

            def generate(self, prompts, sampling_params, use_tqdm=True):
                recorder.calls.append((prompts, sampling_params))
                outputs = [types.SimpleNamespace(outputs=[self.completion(params, k) for k in range(params.n)])
                           for params in sampling_params]
                recorder.after_generate()
                return outputs

            def completion(self, params, k: int):
                """Sample k of a request: an answer picked by its seed, then a stop token as vLLM leaves it."""
                seed = params.seed + k  # vLLM's seed of the request's k-th sample
                ids = self.tokenizer(ANSWERS[seed % len(ANSWERS)], add_special_tokens=False)["input_ids"]
                ids = ids[:params.max_tokens - 1] + [params.stop_token_ids[0]]
                return types.SimpleNamespace(index=k, token_ids=ids, text=self.tokenizer.decode(ids[:-1]))

        vllm = types.ModuleType("vllm")
        vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", loader=None)
        vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
        distributed = types.ModuleType("vllm.distributed")
        distributed.destroy_model_parallel = lambda: recorder.cleaned("model_parallel")
        distributed.destroy_distributed_environment = lambda: recorder.cleaned("distributed_environment")
        return vllm, distributed

    def cleaned(self, what: str) -> None:
        self.cleanups.append((what, all(llm() is None for llm in self.llms)))

    def expected_texts(self, tokenizer) -> list[str]:
        """The responses the fake gave, in request order, decoded as dmtui decodes them."""
        texts = []
        for _, params in self.calls:
            for request in params:
                for k in range(request.n):
                    ids = tokenizer(ANSWERS[(request.seed + k) % len(ANSWERS)], add_special_tokens=False)["input_ids"]
                    texts.append(tokenizer.decode(ids[:request.max_tokens - 1], skip_special_tokens=True).strip())
        return texts


@pytest.fixture
def fake_vllm(monkeypatch) -> FakeVllm:
    fake = FakeVllm()
    vllm, distributed = fake.module()
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.distributed", distributed)
    return fake


@pytest.fixture
def gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)


@pytest.fixture
def no_vllm(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # find_spec then answers None, installed or not


def test_auto_picks_vllm_only_with_vllm_and_a_gpu(fake_vllm, gpu):
    assert resolve_backend("auto") == resolve_backend("vllm") == "vllm"
    assert resolve_backend("transformers") == "transformers"


def test_auto_falls_back_to_transformers_without_a_gpu(fake_vllm, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto") == "transformers"
    with pytest.raises(GenerationBackendError, match="no CUDA GPU is visible") as error:
        resolve_backend("vllm")
    assert "--generation-backend transformers" in error.value.hint


def test_auto_picks_transformers_for_a_run_on_the_cpu(fake_vllm, gpu):
    assert resolve_backend("auto", torch.device("cpu")) == "transformers"
    assert resolve_backend("auto", torch.device("cuda:1")) == resolve_backend("vllm", torch.device("cpu")) == "vllm"


def test_auto_falls_back_to_transformers_without_vllm(no_vllm, gpu):
    assert resolve_backend("auto") == "transformers"
    with pytest.raises(GenerationBackendError, match="vLLM is not installed") as error:
        resolve_backend("vllm")
    assert "pip install vllm" in error.value.hint


def test_an_unknown_backend_is_refused():
    with pytest.raises(GenerationBackendError, match="unknown generation backend 'tgi'") as error:
        resolve_backend("tgi")
    assert "auto, transformers, vllm" in error.value.hint


def test_vllm_samples_each_prompt_n_times_with_its_own_seeds_and_frees_the_gpu(fake_vllm, gpu, demo_models):
    out = generate_responses(demo_models.policy, PROMPTS, backend="auto", **SAMPLING)
    assert out.backend == "vllm"
    (kwargs,) = fake_vllm.llm_kwargs
    assert kwargs["model"] == str(demo_models.policy) and kwargs["seed"] == 5 and kwargs["trust_remote_code"] is False
    assert kwargs["load_format"] == "safetensors"  # no pickle weights, as everywhere else
    assert kwargs["dtype"] == "bfloat16"  # the run's dtype: auto on a GPU
    (call,) = fake_vllm.calls
    params = call[1]
    assert [(p.n, p.temperature, p.top_p, p.max_tokens) for p in params] == [(2, 0.7, 1.0, 12)] * 3
    child_seeds = [p.seed + k for p in params for k in range(p.n)]
    assert len(set(child_seeds)) == 6 and params[0].seed == request_seed(5, 0, 2)
    tokenizer = load_tokenizer(demo_models.policy)
    assert tokenizer.eos_token_id in params[0].stop_token_ids
    assert out.texts == fake_vllm.expected_texts(tokenizer)
    assert len(set(out.texts[:2] + out.texts[4:])) > 1  # the two "bake bread" prompts did not draw alike
    assert out.token_counts == [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in out.texts]
    # the LLM is deleted before vLLM's state is torn down and the cache emptied: DPO training wants the GPU next
    assert fake_vllm.cleanups == [("model_parallel", True), ("distributed_environment", True)]


def test_vllm_gets_exactly_the_prompt_transformers_generates_from(fake_vllm, gpu, demo_models, monkeypatch):
    seen = []
    load_causal_lm = core.models.load.load_causal_lm

    def spying_load(*args, **kwargs):
        model = load_causal_lm(*args, **kwargs)
        generate = model.generate

        def recording_generate(**inputs):
            seen.extend(ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"]))
            return generate(**inputs)

        model.generate = recording_generate
        return model

    monkeypatch.setattr(core.models.load, "load_causal_lm", spying_load)
    generate_responses(demo_models.policy, PROMPTS, backend="transformers", models=LoadedModels("cpu"),
                       **{**SAMPLING, "max_new_tokens": 2})
    generate_responses(demo_models.policy, PROMPTS, backend="vllm", **SAMPLING)
    vllm_prompts = [prompt["prompt_token_ids"] for prompt in fake_vllm.calls[0][0]]
    assert seen == [ids for ids in vllm_prompts for _ in range(SAMPLING["samples_per_prompt"])]
    tokenizer = load_tokenizer(demo_models.policy)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[1]}], tokenize=False,
                                         add_generation_prompt=True)
    assert tokenizer.decode(vllm_prompts[1]) == chat


def test_vllm_chunks_keep_the_order_and_cancel_between_chunks(fake_vllm, gpu, demo_models, monkeypatch):
    whole = generate_responses(demo_models.policy, PROMPTS, backend="vllm", **SAMPLING)
    monkeypatch.setattr(generation_backends, "VLLM_CHUNK_RESPONSES", 2)  # one prompt per generate call
    chunked = generate_responses(demo_models.policy, PROMPTS, backend="vllm", **SAMPLING)
    assert chunked == whole and len(fake_vllm.calls) == 1 + 3

    cancel = threading.Event()
    fake_vllm.after_generate = cancel.set
    with pytest.raises(Cancelled):
        generate_responses(demo_models.policy, PROMPTS, backend="vllm", cancel=cancel, **SAMPLING)
    assert len(fake_vllm.calls) == 1 + 3 + 1
    assert fake_vllm.cleanups[-2:] == [("model_parallel", True), ("distributed_environment", True)]


def test_explicit_vllm_without_it_fails_before_loading_anything(no_vllm, demo_models, monkeypatch):
    monkeypatch.setattr(core.models.load, "load_causal_lm", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(GenerationBackendError, match="vLLM is not installed"):
        generate_responses(demo_models.policy, PROMPTS, backend="vllm", **SAMPLING)


def test_iterate_refuses_vllm_where_it_cannot_run_before_writing_anything(no_vllm, tmp_path):
    config = iteration.IterateConfig(policy="pi_0", reward_model="rm", generation_backend="vllm")
    with pytest.raises(GenerationBackendError, match="vLLM is not installed"):
        iteration.iterate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_iterate_round_records_the_backend_that_sampled(fake_vllm, gpu, demo_models, tmp_path, monkeypatch):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt("stopped before training")

    monkeypatch.setitem(iteration._STAGE_FUNCTIONS, "train", stop)
    config = iteration.IterateConfig(policy=str(demo_models.policy), reward_model=str(demo_models.reward), rounds=1,
                                     prompts_per_round=4, responses_per_prompt=3, max_new_tokens=12,
                                     generation_backend="vllm", device="cpu")  # the stand-in GPU cannot score
    with pytest.raises(KeyboardInterrupt):
        iteration.iterate(config, tmp_path / "run", prompts=online_prompts)
    round_dir = tmp_path / "run" / "round-0"
    generation = json.loads((round_dir / "generation.json").read_text())
    assert generation["backend"] == "vllm" and generation["requested_backend"] == "vllm"
    assert (generation["device"], generation["dtype"]) == ("cpu", "float32")
    assert "vllm" in generation["library_versions"]
    manifest = json.loads((round_dir / "manifest.json").read_text())
    assert manifest["generation"] == generation
    assert len(fake_vllm.calls[0][1]) == 4 and fake_vllm.cleanups[0] == ("model_parallel", True)
