"""Sampling responses from a policy: `generate_responses`, on transformers (always there) or vLLM (optional, GPU only).

`resolve_backend` turns the requested backend into the one that runs: ``auto`` means
vLLM when it is installed, a CUDA GPU is visible and the run's device is a GPU, else
transformers; asking for ``vllm`` where it cannot run is an error, never a
silent fallback. vLLM runs in the run's dtype (core.models.load.LoadedModels). vLLM is never
required: it is imported only inside `generate_with_vllm`.

Both backends sample from the same prompt strings (`chat_prompt_texts`),
cut each response at the same stop ids and decode it with the same tokenizer, and
return the same `Generations`. vLLM gets the prompts as token ids, encoded exactly as
the transformers path encodes them (no special tokens added): handed the strings, vLLM
would tokenize them with special tokens and could put a second BOS in front of the
chat template's.

Seeds. Every request carries its own seed: prompt i draws with ``seed * 2**32 + i * N``,
so prompts with the same text still get different responses, and the same call gives
the same responses however vLLM batches them. How vLLM spreads one request's seed over
its N samples (the tests' stand-in assumes seed plus 0..N-1) is vLLM's business and
has not been checked against a real vLLM: no GPU machine ran this module yet. The two
backends draw differently, so a seed does not give the same texts on both.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import DmtuiError
from core.progress import ProgressFn, Reporter

if TYPE_CHECKING:
    from core.models.load import LoadedModels

GENERATION_BACKENDS = ("auto", "transformers", "vllm")
DEFAULT_BATCH_SIZE = 256
VLLM_CHUNK_RESPONSES = 4096
"""Responses per `LLM.generate` call: progress and cancel checks come between chunks."""


class GenerationError(DmtuiError):
    """A model whose responses cannot be sampled (no chat template, no end-of-sequence token)."""


class GenerationBackendError(DmtuiError):
    """A generation backend that is unknown or cannot run on this machine."""


@dataclass(frozen=True)
class Generations:
    """Sampled responses, `samples_per_prompt` consecutive ones per prompt."""

    texts: list[str]
    token_counts: list[int]
    """Generated tokens of each response, the end-of-sequence token not counted."""
    backend: str = "transformers"
    """The backend that sampled them: transformers or vllm."""


def resolve_backend(requested: str, device=None) -> str:
    """The backend that runs for `requested` (auto, transformers or vllm): "transformers" or "vllm".

    `device` (a torch.device or None) is where the run's other models go: auto picks vLLM
    only for a run on a GPU; an explicit vllm needs a GPU whatever the run's device.
    """
    if requested not in GENERATION_BACKENDS:
        raise GenerationBackendError(
            f"unknown generation backend {requested!r}", f"choose one of {', '.join(GENERATION_BACKENDS)}"
        )
    if requested == "transformers":
        return "transformers"
    import torch

    has_vllm = importlib.util.find_spec("vllm") is not None
    has_gpu = torch.cuda.is_available()
    if requested == "auto":
        on_gpu = device is None or torch.device(device).type == "cuda"
        return "vllm" if has_vllm and has_gpu and on_gpu else "transformers"
    if not has_vllm:
        raise GenerationBackendError(
            "the vllm generation backend was asked for, but vLLM is not installed",
            "pip install vllm (it needs a CUDA GPU), or pass --generation-backend transformers or auto",
        )
    if not has_gpu:
        raise GenerationBackendError(
            "the vllm generation backend was asked for, but no CUDA GPU is visible",
            "run on a machine with a GPU, or pass --generation-backend transformers or auto",
        )
    return "vllm"


def request_seed(seed: int, prompt_index: int, samples_per_prompt: int) -> int:
    """vLLM's seed of the request for prompt `prompt_index` (see the module doc).

    >>> [request_seed(1, i, 5) for i in range(3)]
    [4294967296, 4294967301, 4294967306]
    """
    return (seed % 2**31) * 2**32 + prompt_index * samples_per_prompt


def _generation_config(model_path: str | os.PathLike):
    """The model's generation config without loading its weights (the stop ids come from it)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path)
    except OSError:  # no generation_config.json: transformers derives one from config.json
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_path, trust_remote_code=False))


def generate_with_vllm(
    model_path: str | os.PathLike,
    prompts: list[str],
    *,
    samples_per_prompt: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    dtype=None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Generations:
    """`generate_responses` on vLLM: N samples per prompt, the GPU freed afterwards.

    `dtype` (a torch.dtype; None: the model's own) is the precision vLLM loads the weights in.
    """
    import torch
    from vllm import LLM, SamplingParams

    from core.models.load import load_tokenizer

    if (Path(model_path) / "adapter_config.json").is_file():
        raise GenerationBackendError(
            f"{model_path} is a LoRA adapter, which the vllm backend does not merge",
            "merge it into its base model, or pass --generation-backend transformers",
        )
    tokenizer = load_tokenizer(model_path)
    prompt_ids = tokenizer(chat_prompt_texts(tokenizer, prompts, model_path), add_special_tokens=False)["input_ids"]
    stop_ids = stop_token_ids(_generation_config(model_path), tokenizer)
    reporter = Reporter("generate", len(prompts) * samples_per_prompt, progress, cancel, unit="responses")
    reporter.check()
    gc.collect()
    torch.cuda.empty_cache()  # what an earlier round's training left cached would count against vLLM's share
    # Weights from safetensors only, and no model code: the same rules as core.models.load.
    llm = LLM(
        model=str(model_path),
        dtype="auto" if dtype is None else str(dtype).removeprefix("torch."),
        seed=seed,
        trust_remote_code=False,
        load_format="safetensors",
    )
    responses: list[str] = []
    token_counts: list[int] = []
    try:
        chunk = max(1, VLLM_CHUNK_RESPONSES // samples_per_prompt)
        for start in range(0, len(prompt_ids), chunk):
            reporter.check()
            indices = range(start, min(start + chunk, len(prompt_ids)))
            params = [
                SamplingParams(
                    n=samples_per_prompt,
                    temperature=temperature,
                    top_p=1.0,
                    max_tokens=max_new_tokens,
                    seed=request_seed(seed, i, samples_per_prompt),
                    stop_token_ids=sorted(stop_ids),
                )
                for i in indices
            ]
            outputs = llm.generate([{"prompt_token_ids": prompt_ids[i]} for i in indices], params, use_tqdm=False)
            for request in outputs:
                for sample in sorted(request.outputs, key=lambda completion: completion.index):
                    generated = until_stop(list(sample.token_ids), stop_ids)
                    token_counts.append(len(generated))
                    responses.append(tokenizer.decode(generated, skip_special_tokens=True).strip())
            reporter.advance(len(indices) * samples_per_prompt)
    finally:
        del llm
        _release_vllm_memory()
    reporter.finish()
    return Generations(responses, token_counts, backend="vllm")


def _release_vllm_memory() -> None:
    """Give vLLM's GPU memory back once its `LLM` is deleted: DPO training follows in the same process."""
    import torch
    from vllm.distributed import destroy_distributed_environment, destroy_model_parallel

    destroy_model_parallel()
    destroy_distributed_environment()
    gc.collect()
    torch.cuda.empty_cache()


def generate_responses(
    model_path: str | os.PathLike,
    prompts: list[str],
    *,
    samples_per_prompt: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    backend: str = "auto",
    models: LoadedModels | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> Generations:
    """Sample responses from the causal LM at `model_path` to each prompt, in fixed batches.

    `backend` is auto, transformers or vllm (`resolve_backend`).
    `models` gives the device and dtype and keeps the model loaded for later steps
    (default: a fresh set on the auto device). With transformers the seed is set once
    before the first batch, so the same call gives the same texts; the batch size is part
    of that promise (sampling draws for a whole batch at once).
    """
    from core.models.load import LoadedModels

    models = models or LoadedModels()
    sampling: dict[str, Any] = {
        "samples_per_prompt": samples_per_prompt,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
    }
    if resolve_backend(backend, models.device) == "vllm":
        return generate_with_vllm(model_path, prompts, dtype=models.dtype, progress=progress, cancel=cancel, **sampling)
    return _generate_with_transformers(
        model_path, prompts, models, batch_size=batch_size, progress=progress, cancel=cancel, **sampling
    )


def chat_prompt_texts(tokenizer, prompts: list[str], model_path: str | os.PathLike) -> list[str]:
    """Each prompt as a user turn through the tokenizer's chat template, ready for the assistant's answer.

    Every generation backend samples from exactly these strings.
    """
    if not tokenizer.chat_template:
        raise GenerationError(
            f"{model_path}'s tokenizer has no chat template", "evaluate a chat model (the demo models have one)"
        )
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        for prompt in prompts
    ]


def _generate_with_transformers(
    model_path, prompts, models, *, samples_per_prompt, temperature, max_new_tokens, seed, batch_size, progress, cancel
) -> Generations:
    import torch

    from core.models.load import load_tokenizer

    tokenizer = load_tokenizer(model_path, padding_side="left")
    texts = [text for text in chat_prompt_texts(tokenizer, prompts, model_path) for _ in range(samples_per_prompt)]
    model = models.causal_lm(model_path)
    reporter = Reporter("generate", len(texts), progress, cancel, unit="responses")
    stop_ids = stop_token_ids(model.generation_config, tokenizer)
    responses: list[str] = []
    token_counts: list[int] = []
    torch.manual_seed(seed)
    for start in range(0, len(texts), batch_size):
        reporter.check()
        batch = tokenizer(
            texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(models.device)
        with torch.no_grad():
            output = model.generate(
                **batch,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=sorted(stop_ids),
            )
        for row in output[:, batch["input_ids"].shape[1] :].tolist():
            generated = until_stop(row, stop_ids)
            token_counts.append(len(generated))
            responses.append(tokenizer.decode(generated, skip_special_tokens=True).strip())
        reporter.advance(len(output))
    reporter.finish()
    return Generations(responses, token_counts, backend="transformers")


def stop_token_ids(generation_config, tokenizer) -> set[int]:
    """The ids that end a response: the generation config's end-of-sequence ids and the tokenizer's."""
    configured = generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured]) - {None}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise GenerationError("the model names no end-of-sequence token, so its responses would never end")
    return ids


def until_stop(token_ids: list[int], stop_ids: set[int]) -> list[int]:
    """The generated ids before the first stop token (padding follows it).

    >>> until_stop([5, 6, 2, 0, 0], {2})
    [5, 6]
    """
    for position, token in enumerate(token_ids):
        if token in stop_ids:
            return token_ids[:position]
    return token_ids
