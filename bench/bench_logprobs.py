"""Throughput of the log-prob paths, side by side, on a tiny-but-not-trivial Llama.

    .venv/bin/python bench/bench_logprobs.py [--pairs 16] [--prompt 200] [--response 50]

Paths, all on the same preference pairs (chosen and rejected share the prompt):
  naive    one sequence at a time, full [seq, vocab] logits, log_softmax, gather
  engine   core.models.logprobs.response_logprobs: length-bucketed batches, LM head on
           response positions only, chunked
  shared   core.models.logprobs.pair_logprobs: the prompt runs once, its KV cache is
           repeated for chosen and rejected, only the responses run again

Tokens/s counts prompt + response tokens of every (prompt, response) sequence, i.e.
the work the naive path does. "logits peak" is the largest floating tensor with the
vocabulary as last dimension that the path allocated (bench/logits_memory.py, watched in
an untimed pass), which is what grows with vocab.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from logits_memory import LogitsPeak  # noqa: E402

from core.models.logprobs import Encoded, pair_logprobs, response_logprobs  # noqa: E402


def build_model(vocab: int, hidden: int, layers: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
        max_position_embeddings=2048, initializer_range=0.1, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def build_pairs(n: int, prompt_len: int, response_len: int, vocab: int) -> tuple[Encoded, Encoded]:
    rng = np.random.default_rng(0)

    def ids(length: int) -> list[int]:
        return rng.integers(2, vocab, size=length).tolist()

    prompts = [ids(int(rng.integers(prompt_len * 9 // 10, prompt_len + 1))) for _ in range(n)]
    sides = [
        [ids(int(rng.integers(response_len * 8 // 10, response_len * 12 // 10 + 1))) for _ in range(n)]
        for _ in range(2)
    ]
    flags = np.zeros(n, dtype=bool)
    return Encoded(prompts, sides[0], flags), Encoded(prompts, sides[1], flags)


@torch.inference_mode()
def naive(model, encoded: Encoded) -> np.ndarray:
    sums = []
    for prompt, response in zip(encoded.prompt_ids, encoded.response_ids):
        ids = torch.tensor([prompt + response])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        targets = ids[0, len(prompt):]
        sums.append(logp[len(prompt) - 1 : -1].gather(-1, targets[:, None]).sum().item())
    return np.array(sums)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=200)
    parser.add_argument("--response", type=int, default=50)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(torch.get_num_threads())
    model = build_model(args.vocab, args.hidden, args.layers)
    chosen, rejected = build_pairs(args.pairs, args.prompt, args.response, args.vocab)
    tokens = sum(len(p) + len(r) for side in (chosen, rejected) for p, r in zip(side.prompt_ids, side.response_ids))
    paths = {
        "naive": lambda: (naive(model, chosen), naive(model, rejected)),
        "engine": lambda: tuple(
            response_logprobs(model, side, batch_tokens=args.batch_tokens).logprob_sum for side in (chosen, rejected)
        ),
        "shared": lambda: tuple(
            r.logprob_sum for r in pair_logprobs(model, chosen, rejected, batch_tokens=args.batch_tokens)
        ),
    }
    print(
        f"model: Llama vocab {args.vocab}, hidden {args.hidden}, {args.layers} layers, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params; device cpu, "
        f"{torch.get_num_threads()} threads; {args.pairs} pairs, prompt ~{args.prompt}, "
        f"responses ~{args.response} tokens; {tokens} tokens per pass; best of {args.repeats}"
    )
    results, peaks = {}, {}
    for name, fn in paths.items():  # warm-up, and the untimed pass that watches the logits
        with LogitsPeak(args.vocab) as watch:
            results[name] = fn()
        peaks[name] = watch.peak
    seconds = dict.fromkeys(paths, float("inf"))
    for _ in range(args.repeats):  # round-robin, best of: a busy shared machine hits all paths alike
        for name, fn in paths.items():
            results[name], elapsed = timed(fn)
            seconds[name] = min(seconds[name], elapsed)
    reference = np.concatenate(results["naive"])
    for name in paths:
        diff = np.abs(np.concatenate(results[name]) - reference).max()
        print(
            f"{name:>7}: {tokens / seconds[name]:9.0f} tok/s  {seconds[name]:6.3f} s  "
            f"x{seconds['naive'] / seconds[name]:5.2f} vs naive  x{seconds['engine'] / seconds[name]:5.2f} vs engine  "
            f"logits peak {peaks[name] / 2**20:7.1f} MiB  max |diff vs naive| {diff:.2e}"
        )


if __name__ == "__main__":
    main()
