"""Which library samples responses: transformers (always there) or vLLM (optional, GPU only).

`resolve_backend` turns the requested backend into the one that runs: ``auto`` means
vLLM when it is installed, a CUDA GPU is visible and the run's device is a GPU, else
transformers; asking for ``vllm`` where it cannot run is an error, never a
silent fallback. vLLM runs in the run's dtype (core.models.LoadedModels). vLLM is never
required: it is imported only inside `generate_with_vllm`.

Both backends sample from the same prompt strings (`core.evaluation.chat_prompt_texts`),
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
from pathlib import Path

from core.errors import DmtuiError
from core.evaluation import Generations, chat_prompt_texts, stop_token_ids, until_stop
from core.progress import ProgressFn, Reporter

GENERATION_BACKENDS = ("auto", "transformers", "vllm")
VLLM_CHUNK_RESPONSES = 4096
"""Responses per `LLM.generate` call: progress and cancel checks come between chunks."""


class GenerationBackendError(DmtuiError):
    """A generation backend that is unknown or cannot run on this machine."""


def resolve_backend(requested: str, device=None) -> str:
    """The backend that runs for `requested` (auto, transformers or vllm): "transformers" or "vllm".

    `device` (a torch.device or None) is where the run's other models go: auto picks vLLM
    only for a run on a GPU; an explicit vllm needs a GPU whatever the run's device.
    """
    if requested not in GENERATION_BACKENDS:
        raise GenerationBackendError(f"unknown generation backend {requested!r}",
                                     f"choose one of {', '.join(GENERATION_BACKENDS)}")
    if requested == "transformers":
        return "transformers"
    import torch

    has_vllm = importlib.util.find_spec("vllm") is not None
    has_gpu = torch.cuda.is_available()
    if requested == "auto":
        on_gpu = device is None or torch.device(device).type == "cuda"
        return "vllm" if has_vllm and has_gpu and on_gpu else "transformers"
    if not has_vllm:
        raise GenerationBackendError("the vllm generation backend was asked for, but vLLM is not installed",
                                     "pip install vllm (it needs a CUDA GPU), or pass --generation-backend "
                                     "transformers or auto")
    if not has_gpu:
        raise GenerationBackendError("the vllm generation backend was asked for, but no CUDA GPU is visible",
                                     "run on a machine with a GPU, or pass --generation-backend transformers or auto")
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
    """`core.evaluation.generate_responses` on vLLM: N samples per prompt, the GPU freed afterwards.

    `dtype` (a torch.dtype; None: the model's own) is the precision vLLM loads the weights in.
    """
    import torch
    from vllm import LLM, SamplingParams

    from core.models import load_tokenizer

    if (Path(model_path) / "adapter_config.json").is_file():
        raise GenerationBackendError(f"{model_path} is a LoRA adapter, which the vllm backend does not merge",
                                     "merge it into its base model, or pass --generation-backend transformers")
    tokenizer = load_tokenizer(model_path)
    prompt_ids = tokenizer(chat_prompt_texts(tokenizer, prompts, model_path), add_special_tokens=False)["input_ids"]
    stop_ids = stop_token_ids(_generation_config(model_path), tokenizer)
    reporter = Reporter("generate", len(prompts) * samples_per_prompt, progress, cancel, unit="responses")
    reporter.check()
    gc.collect()
    torch.cuda.empty_cache()  # what an earlier round's training left cached would count against vLLM's share
    # Weights from safetensors only, and no model code: the same rules as core.models.
    llm = LLM(model=str(model_path), dtype="auto" if dtype is None else str(dtype).removeprefix("torch."), seed=seed,
              trust_remote_code=False, load_format="safetensors")
    responses: list[str] = []
    token_counts: list[int] = []
    try:
        chunk = max(1, VLLM_CHUNK_RESPONSES // samples_per_prompt)
        for start in range(0, len(prompt_ids), chunk):
            reporter.check()
            indices = range(start, min(start + chunk, len(prompt_ids)))
            params = [SamplingParams(n=samples_per_prompt, temperature=temperature, top_p=1.0,
                                     max_tokens=max_new_tokens, seed=request_seed(seed, i, samples_per_prompt),
                                     stop_token_ids=sorted(stop_ids))
                      for i in indices]
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
