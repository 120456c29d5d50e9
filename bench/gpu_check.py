"""What scoring does on a GPU, with random-initialised realistic models (nothing downloaded).

    python bench/gpu_check.py                    # one GPU, at most ~8 minutes
    python bench/gpu_check.py --tiny --device cpu   # a tiny config, seconds: what CI runs

Prints (and with --json writes one object):

1. scoring throughput of the log-prob engine (core.models.logprobs.pair_logprobs, as `dmtui score`
   runs it) on a Llama-3.2-1B-shaped model in bf16: tokens/s and model FLOPs utilisation
   (MFU: the FLOPs the engine must do per second over the GPU's dense bf16 peak; the peak
   comes from a table of GPU names or --peak-tflops);
2. bf16-vs-fp32 noise of implicit margins: pi_1 = pi_0 with its weights nudged, margins
   of the same pairs in both precisions; the noise (std of the difference) over the spread
   of the fp32 margins (their std), and the largest difference;
3. the reward model's padding self-check (core.scoring.scorers.padding_is_safe) in bf16 on a
   Llama-shaped sequence classifier: its outcome and the largest padded-vs-alone gap
   relative to 1 + |score|, against the bf16 tolerance;
4. peak memory (GPU: torch.cuda.max_memory_allocated; CPU: the process's peak RSS).

Each phase checks the time budget (--minutes, default 8) before it starts and is skipped,
and said so, when it would not fit.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.models.load import pick_device  # noqa: E402
from core.models.logprobs import Encoded, pair_logprobs  # noqa: E402
from core.scoring.scorers import pad_id_of, padding_gap, padding_tolerance  # noqa: E402

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L40": 181.0, "A10G": 125.0,
                    "A10": 125.0, "L4": 121.0, "4090": 165.0, "3090": 71.0, "V100": 125.0, "T4": 65.0}
"""Dense bf16 (fp16 where there is no bf16) tensor-core peaks, TFLOP/s, by a name fragment."""
LLAMA_1B = {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
            "tie_word_embeddings": True, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
                                                             "factor": 32.0, "low_freq_factor": 1.0,
                                                             "high_freq_factor": 4.0,
                                                             "original_max_position_embeddings": 8192}}
"""Llama-3.2-1B's config."""
TINY = {**LLAMA_1B, "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}


def llama(config: dict, *, classifier: bool = False, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(seed)
    llama_config = LlamaConfig(**config, initializer_range=0.02, pad_token_id=0,
                               **({"num_labels": 1} if classifier else {}))
    model = (LlamaForSequenceClassification if classifier else LlamaForCausalLM)(llama_config)
    return model.eval()


def random_pairs(n: int, prompt: int, response: int, vocab: int, seed: int = 0) -> tuple[Encoded, Encoded]:
    rng = np.random.default_rng(seed)

    def ids(mean: int) -> list[int]:
        return rng.integers(1, vocab, size=int(rng.integers(mean // 2, mean * 3 // 2 + 1))).tolist()

    prompts = [ids(prompt) for _ in range(n)]
    flags = np.zeros(n, dtype=bool)
    return (Encoded(prompts, [ids(response) for _ in range(n)], flags),
            Encoded(prompts, [ids(response) for _ in range(n)], flags))


def engine_flops(model, chosen: Encoded, rejected: Encoded) -> float:
    """FLOPs the engine has to do: 2 x non-embedding parameters per token run, attention over the
    context, the LM head on response tokens; a shared prompt counted once."""
    config = model.config
    params = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name and "lm_head" not in name)
    flops = 0.0
    for prompt, c, r in zip(chosen.prompt_ids, chosen.response_ids, rejected.response_ids):
        p = len(prompt)
        tokens = p + len(c) + len(r)
        attention = sum(4 * config.num_hidden_layers * config.hidden_size * (p + j)
                        for side in (c, r) for j in range(len(side))) + 2 * config.num_hidden_layers * \
            config.hidden_size * p * p
        head = 2 * config.hidden_size * config.vocab_size * (len(c) + len(r))
        flops += 2 * params * tokens + attention + head
    return flops


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given:
        return given, "given"
    if device.type != "cuda":
        return None, "no GPU"
    name = torch.cuda.get_device_name(device)
    found = next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)
    return found, name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(config, device, dtype, pairs, prompt, response, batch_tokens, peak) -> dict:
    model = llama(config).to(device=device, dtype=dtype)
    chosen, rejected = random_pairs(pairs, prompt, response, config["vocab_size"])
    pair_logprobs(model, chosen.subset(range(min(4, pairs))), rejected.subset(range(min(4, pairs))),
                  batch_tokens=batch_tokens)  # warm-up: kernels, allocator
    sync(device)
    start = time.perf_counter()
    pair_logprobs(model, chosen, rejected, batch_tokens=batch_tokens)
    sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(len(p) + len(c) + len(r) for p, c, r in
                 zip(chosen.prompt_ids, chosen.response_ids, rejected.response_ids))
    achieved = engine_flops(model, chosen, rejected) / seconds / 1e12
    return {"params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3), "pairs": pairs,
            "tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1),
            "tflops": round(achieved, 2), "mfu": None if peak is None else round(achieved / peak, 4)}


def margin_noise(config, device, pairs, prompt, response, batch_tokens) -> dict:
    """Implicit margins of the same pairs with both models in fp32, then in bf16."""
    chosen, rejected = random_pairs(pairs, prompt, response, config["vocab_size"], seed=1)
    reference = llama(config)
    policy = llama(config)
    policy.load_state_dict(reference.state_dict())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.mul_(1 + 0.05 * torch.randn(parameter.shape, generator=generator))
    margins = {}
    for dtype in (torch.float32, torch.bfloat16):
        sums = []
        for model in (policy, reference):
            model.to(device=device, dtype=dtype)
            lp_c, lp_r = pair_logprobs(model, chosen, rejected, batch_tokens=batch_tokens)
            sums.append((lp_c.logprob_sum, lp_r.logprob_sum))
            model.to("cpu")
        (pc, pr), (rc, rr) = sums
        margins[dtype] = (pc - rc) - (pr - rr)
    difference = margins[torch.bfloat16] - margins[torch.float32]
    spread = float(np.std(margins[torch.float32]))
    return {"pairs": pairs, "fp32_margin_std": round(spread, 4), "noise_std": round(float(np.std(difference)), 4),
            "noise_over_spread": round(float(np.std(difference)) / spread, 4) if spread else None,
            "max_abs_difference": round(float(np.abs(difference).max()), 4)}


def padding_check(config, device, sequences: int, length: int) -> dict:
    model = llama(config, classifier=True, seed=2).to(device=device, dtype=torch.bfloat16)
    rng = np.random.default_rng(2)
    batch = [rng.integers(1, config["vocab_size"], size=int(n)).tolist()
             for n in np.linspace(length // 8, length, sequences).astype(int)]
    gap, tolerance = padding_gap(model, batch, pad_id_of(model, None)), padding_tolerance(model)
    return {"outcome": "padded batches used" if gap <= tolerance else "fell back to one sequence per forward",
            "safe": gap <= tolerance, "max_relative_gap": round(gap, 5), "tolerance": tolerance}


def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)}
    return {"rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and few pairs (CPU, CI)")
    parser.add_argument("--minutes", type=float, default=8.0, help="time budget (default: 8)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, when its name is not known")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    started = time.monotonic()
    device = pick_device(args.device)
    config = TINY if args.tiny else LLAMA_1B
    size = (dict(pairs=8, prompt=24, response=24, batch_tokens=512) if args.tiny
            else dict(pairs=256, prompt=256, response=256, batch_tokens=32768))
    peak, gpu = peak_tflops(device, args.peak_tflops)
    print(f"device {device} ({gpu}); model: {'tiny Llama' if args.tiny else 'Llama-3.2-1B shape'}, random weights; "
          f"budget {args.minutes:g} min")
    results: dict = {"device": str(device), "gpu": gpu, "peak_tflops": peak, "tiny": args.tiny}
    phases = [
        ("throughput", lambda: throughput(config, device, torch.bfloat16, size["pairs"], size["prompt"],
                                          size["response"], size["batch_tokens"], peak)),
        ("margin_noise", lambda: margin_noise(config, device, max(8, size["pairs"] // 4), size["prompt"],
                                              size["response"], size["batch_tokens"])),
        ("padding_check", lambda: padding_check(config, device, 6, 2 * (size["prompt"] + size["response"]))),
    ]
    for name, run in phases:
        used = (time.monotonic() - started) / 60
        if used > args.minutes * 0.85:
            results[name] = {"skipped": f"the budget was spent ({used:.1f} of {args.minutes:g} min)"}
        else:
            phase_start = time.monotonic()
            results[name] = {**run(), "phase_seconds": round(time.monotonic() - phase_start, 1)}
        print(f"{name}: {json.dumps(results[name])}")
    results["peak_memory"] = peak_memory(device)
    results["seconds"] = round(time.monotonic() - started, 1)
    print(f"peak memory: {json.dumps(results['peak_memory'])}; total {results['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
