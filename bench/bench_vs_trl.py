"""The log-prob engine against TRL 1.16's reference-log-prob path and a naive computation, side by side.

    .venv/bin/python bench/bench_vs_trl.py [--repeats 3] [--shapes prompt-heavy,response-heavy] [--json FILE]

Same model, same token ids, one run. Per shape it prints, for each path, tokens/s, the
speed ratio against TRL, the largest |difference| from naive of any pair's log-prob sum
(and relative to that sum: a sum over hundreds of tokens runs to hundreds of nats, where fp32
rounding alone moves the fourth decimal between two batch shapes), and the largest logits
tensor the path built (MiB) with its ratio to TRL's:

  naive   one sequence at a time, the model's own forward, full [seq, vocab] logits,
          log_softmax, gather (the reference every path must equal)
  trl     what DPOTrainer does to precompute reference log-probs: its preference collator
          (trl.trainer.dpo_trainer.DataCollatorForPreference: chosen and rejected of 8
          pairs right-padded into one batch of 16), the model patched with TRL's fused LM
          head (add_fused_lm_head) and DPOTrainer.compute_ref_log_probs itself, run on a
          stand-in trainer holding only what that method reads
  engine  core.models.logprobs.pair_logprobs, as `dmtui score` calls it: length-bucketed
          batches, the shared prompt run once with its KV cache serving both responses,
          only response positions through the LM head, in fp32 chunks

Shapes (16 pairs of random token ids): prompt-heavy ~512-token prompts and ~64-token
responses; response-heavy ~32-token prompts and ~384-token responses. Each length is drawn
uniformly from a quarter to 1.75 times its mean, as lengths spread in real preference data
(UltraFeedback's responses run from a few tokens to over a thousand); "padded" is the share
of TRL's batch positions that are padding, which its batches of 8 pairs pay for and the
engine's length-sorted batches mostly do not.
Model: a random-initialised Llama (vocab 32k, hidden 256, 4 layers, GQA) in fp32 on CPU.
"Logits peak" is the largest float tensor whose last dimension is the vocabulary that
the path allocated, and GFLOP the matrix products it ran (torch's FlopCounterMode), both
watched in an untimed pass: unlike seconds, they do not move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from logits_memory import LogitsPeak  # noqa: E402

from core.models.logprobs import Encoded, pair_logprobs  # noqa: E402

SHAPES = {"prompt-heavy": (512, 64), "response-heavy": (32, 384)}
TRL_BATCH_PAIRS = 8


def build_model(vocab: int, hidden: int, layers: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 8 // 3, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 128), max_position_embeddings=2048,
        initializer_range=0.1, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def build_pairs(n: int, prompt_len: int, response_len: int, vocab: int, seed: int = 0) -> tuple[Encoded, Encoded]:
    rng = np.random.default_rng(seed)

    def ids(length: int) -> list[int]:
        return rng.integers(3, vocab, size=length).tolist()

    def length(mean: int) -> int:  # spread as in real preference data: a quarter to 1.75 times the mean
        return max(1, int(rng.integers(mean // 4, mean * 7 // 4 + 1)))

    prompts = [ids(length(prompt_len)) for _ in range(n)]
    sides = [[ids(length(response_len)) for _ in range(n)] for _ in range(2)]
    flags = np.zeros(n, dtype=bool)
    return Encoded(prompts, sides[0], flags), Encoded(prompts, sides[1], flags)


@torch.inference_mode()
def naive(model, chosen: Encoded, rejected: Encoded) -> np.ndarray:
    sums = []
    for encoded in (chosen, rejected):
        for prompt, response in zip(encoded.prompt_ids, encoded.response_ids):
            ids = torch.tensor([prompt + response])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            sums.append(logp[len(prompt) - 1 : -1].gather(-1, ids[0, len(prompt):, None]).sum().item())
    return np.array(sums)


class TrlReferencePath:
    """DPOTrainer's reference log-probs on our ids, through TRL's own collator, fused head and method."""

    def __init__(self, model) -> None:
        import copy

        from accelerate import Accelerator
        from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer
        from trl.trainer.utils import add_fused_lm_head

        self.model = copy.deepcopy(model)  # patched in place; the other paths keep the plain model
        add_fused_lm_head(self.model)
        self.collate = DataCollatorForPreference(pad_token_id=0)
        self.compute = DPOTrainer.compute_ref_log_probs
        self.trainer = SimpleNamespace(  # exactly the attributes compute_ref_log_probs reads
            accelerator=Accelerator(cpu=True), ref_model=self.model, model=self.model, ld_alpha=None,
            args=SimpleNamespace(gradient_checkpointing_kwargs=None))

    def batches(self, chosen: Encoded, rejected: Encoded):
        for start in range(0, len(chosen), TRL_BATCH_PAIRS):
            yield self.collate([{"prompt_ids": chosen.prompt_ids[i], "chosen_ids": chosen.response_ids[i],
                                 "rejected_ids": rejected.response_ids[i]}
                                for i in range(start, min(start + TRL_BATCH_PAIRS, len(chosen)))])

    def padding_share(self, chosen: Encoded, rejected: Encoded) -> float:
        masks = [batch["attention_mask"] for batch in self.batches(chosen, rejected)]
        return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)

    def __call__(self, chosen: Encoded, rejected: Encoded) -> np.ndarray:
        out_chosen, out_rejected = [], []
        for batch in self.batches(chosen, rejected):
            logp_chosen, logp_rejected = self.compute(self.trainer, self.model, batch)
            out_chosen.append(logp_chosen.double().numpy())
            out_rejected.append(logp_rejected.double().numpy())
        return np.concatenate(out_chosen + out_rejected)


def engine(model, chosen: Encoded, rejected: Encoded, batch_tokens: int) -> np.ndarray:
    lp_chosen, lp_rejected = pair_logprobs(model, chosen, rejected, batch_tokens=batch_tokens)
    return np.concatenate([lp_chosen.logprob_sum, lp_rejected.logprob_sum])


def measure(paths: dict, vocab: int, repeats: int) -> tuple[dict, dict, dict, dict]:
    """Best-of-`repeats` seconds (paths interleaved, so load hits all alike), values, logits peaks and
    FLOPs (counted by torch, so the same on an idle or a busy machine)."""
    from torch.utils.flop_counter import FlopCounterMode

    values, seconds, peaks, flops = {}, dict.fromkeys(paths, float("inf")), {}, {}
    for name, run in paths.items():  # warm-up, and the untimed pass that watches the logits and counts
        with FlopCounterMode(display=False) as counter, LogitsPeak(vocab) as watch:
            values[name] = run()
        peaks[name], flops[name] = watch.peak, counter.get_total_flops()
    for _ in range(repeats):
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            seconds[name] = min(seconds[name], time.perf_counter() - start)
    return values, seconds, peaks, flops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every length (tests use 1/8)")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)

    model = build_model(args.vocab, args.hidden, args.layers)
    trl = TrlReferencePath(model)
    print(f"model: Llama vocab {args.vocab}, hidden {args.hidden}, {args.layers} layers, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, fp32, cpu, "
          f"{torch.get_num_threads()} threads; {args.pairs} pairs; TRL batch {TRL_BATCH_PAIRS} pairs; "
          f"best of {args.repeats}, paths interleaved")
    figures: dict = {"model": {"vocab": args.vocab, "hidden": args.hidden, "layers": args.layers},
                     "threads": torch.get_num_threads(), "pairs": args.pairs, "shapes": {}}
    for shape in args.shapes.split(","):
        prompt_len, response_len = (max(2, int(n * args.scale)) for n in SHAPES[shape])
        chosen, rejected = build_pairs(args.pairs, prompt_len, response_len, args.vocab)
        tokens = sum(len(p) + len(r) for side in (chosen, rejected) for p, r in zip(side.prompt_ids, side.response_ids))
        paths = {"naive": lambda: naive(model, chosen, rejected), "trl": lambda: trl(chosen, rejected),
                 "engine": lambda: engine(model, chosen, rejected, args.batch_tokens)}
        values, seconds, peaks, flops = measure(paths, args.vocab, args.repeats)
        padded = trl.padding_share(chosen, rejected)
        print(f"\n{shape}: prompts ~{prompt_len}, responses ~{response_len} tokens; {tokens} tokens per pass; "
              f"TRL's batches {100 * padded:.0f}% padding")
        figures["shapes"][shape] = {"prompt": prompt_len, "response": response_len, "tokens": tokens,
                                    "trl_padding_share": round(padded, 4), "paths": {}}
        for name in paths:
            path = {"tokens_per_s": tokens / seconds[name], "seconds": seconds[name],
                    "speed_vs_trl": seconds["trl"] / seconds[name],
                    "max_abs_diff_vs_naive": float(np.abs(values[name] - values["naive"]).max()),
                    "max_rel_diff_vs_naive": float((np.abs(values[name] - values["naive"])
                                                    / np.abs(values["naive"])).max()),
                    "logits_peak_mib": peaks[name] / 2**20, "logits_vs_trl": peaks[name] / max(peaks["trl"], 1),
                    "gflop": flops[name] / 1e9, "flops_vs_trl": flops[name] / flops["trl"]}
            figures["shapes"][shape]["paths"][name] = path
            print(f"  {name:>6}: {path['tokens_per_s']:9.0f} tok/s  {path['seconds']:7.3f} s  "
                  f"x{path['speed_vs_trl']:5.2f} vs TRL  max |diff vs naive| {path['max_abs_diff_vs_naive']:.1e} "
                  f"({path['max_rel_diff_vs_naive']:.0e} of the sum)  "
                  f"logits peak {path['logits_peak_mib']:7.1f} MiB (x{path['logits_vs_trl']:.2f} of TRL's)  "
                  f"GFLOP {path['gflop']:7.1f} (x{path['flops_vs_trl']:.2f} of TRL's)")
    figures["slowest_shape_speed_vs_trl"] = min(shape["paths"]["engine"]["speed_vs_trl"]
                                                for shape in figures["shapes"].values())
    print(f"\nengine vs TRL, slowest shape: x{figures['slowest_shape_speed_vs_trl']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
