"""Why a LoRA seed policy is scored unmerged: implicit margins in bf16, merged vs unmerged (not run in CI).

Trains a LoRA adapter on the demo pi_0 (seed DPO, a few steps), then scales its update
B A down by factors of 10 (a 7-8B model's LoRA update is small next to its weights) and,
for each scale, computes the implicit margins of demo pairs four ways, side by side:

- truth: fp32 pi_0 and fp32 pi_1 (the adapter merged in fp32);
- bf16 merged: pi_1 = the fp32 merge cast to bf16, against pi_0 cast to bf16;
- bf16 unmerged: one bf16 copy of pi_0 carrying the fp32 adapter, switched off for pi_0
  (core.scoring.seed_policy.adapter_views, what scoring does).

Every way goes through core.scoring.scorers.implicit_columns, the scoring path.

It prints each bf16 way's RMS error against the truth, relative to the spread (std) of the
true margins, and the Spearman of each with the truth.

    .venv/bin/python bench/seed_lora_precision.py            # about a minute on a 2-core CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def margins(policy, reference, tokenizer, pairs) -> np.ndarray:
    from core.scoring.scorers import Limits, implicit_columns

    return implicit_columns(policy, reference, tokenizer, pairs, Limits(1024), batch_tokens=8192,
                            pass_progress=lambda index, passes: None)["margin"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200, help="demo pairs to score (default 200)")
    parser.add_argument("--steps", type=int, default=20, help="seed DPO steps of the adapter (default 20)")
    args = parser.parse_args(argv)

    import torch
    from peft import PeftModel

    from core.data.loading import LoadConfig, load_dataset
    from core.demo.models import DemoModelsConfig, ensure_demo_models
    from core.models.load import load_causal_lm, load_tokenizer
    from core.scoring.scorers import Pairs
    from core.scoring.seed_policy import adapter_views
    from core.selection.stats import spearman
    from core.training.trainer import TrainConfig, train

    models = ensure_demo_models(DemoModelsConfig())
    pairs = load_dataset(str(REPO_ROOT / "sample_data" / "demo" / "pairs.jsonl"), LoadConfig()).pairs
    train_rows, score_rows = pairs.slice(0, 256), pairs.slice(256, args.pairs).to_pylist()
    config = TrainConfig(model=str(models.policy), lora=True, lora_r=16, lora_alpha=32, lr=1e-3,
                         max_steps=args.steps, batch_size=32, per_device_batch_size=32, save_steps=10**9,
                         gradient_checkpointing=False)
    adapter = train(config, train_rows, Path(tempfile.mkdtemp()) / "run", metrics_sink=lambda r: None).final
    tokenizer = load_tokenizer(str(models.policy))
    scored = Pairs(*([p[side] for p in score_rows] for side in ("prompt", "chosen", "rejected")), True)

    def scale_update(model, scale):
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.mul_(scale)
        return model

    def with_adapter(dtype, scale):
        base = load_causal_lm(models.policy, device="cpu", dtype=dtype)
        return scale_update(PeftModel.from_pretrained(base, str(adapter)).eval(), scale)

    print(f"{len(score_rows)} demo pairs; LoRA r=16 after {args.steps} seed-DPO steps, update B A scaled by s")
    print("| s | spread of true margins | bf16 merged: RMS error / spread | Spearman | "
          "bf16 unmerged: RMS error / spread | Spearman |")
    print("|---:|---:|---:|---:|---:|---:|")
    pi_0_fp32 = load_causal_lm(models.policy, device="cpu", dtype=torch.float32)
    pi_0_bf16 = load_causal_lm(models.policy, device="cpu", dtype=torch.bfloat16)
    for scale in (1.0, 0.1, 0.01):
        truth = margins(with_adapter(torch.float32, scale).merge_and_unload(), pi_0_fp32, tokenizer, scored)
        merged = margins(with_adapter(torch.float32, scale).merge_and_unload().to(torch.bfloat16), pi_0_bf16,
                         tokenizer, scored)
        reference, (policy,) = adapter_views(load_causal_lm(models.policy, device="cpu", dtype=torch.bfloat16),
                                             [adapter])
        scale_update(policy.model, scale)
        unmerged = margins(policy, reference, tokenizer, scored)
        spread = float(np.std(truth))
        rows = []
        for estimate in (merged, unmerged):
            rms = float(np.sqrt(np.mean((estimate - truth) ** 2)))
            rows += [f"{rms / spread:.3f}", f"{spearman(estimate, truth):.3f}"]
        print(f"| {scale:g} | {spread:.3g} | " + " | ".join(rows) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
