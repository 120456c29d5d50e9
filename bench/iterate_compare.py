"""Plain iterative DPO (keep 100%) against DPO-DM (keep the top 25% by DM-MUL) on the demo world.

For each seed and each keep fraction, runs `core.online.iteration.iterate` for R rounds from the
demo pi_0 with the demo reward model, then evaluates each round's policy against pi_0
on held-out demo prompts with the oracle (`core.generation.evaluation.evaluate`): win rate, mean
oracle reward, mean length. Prints a markdown table of mean (min-max) over seeds.

    python bench/iterate_compare.py [--seeds 0 1] [--rounds 3] [--prompts 128] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.demo.models import DemoModelsConfig, ensure_demo_models  # noqa: E402
from core.demo.oracle import OracleJudge, held_out_prompts, online_prompts  # noqa: E402
from core.generation.evaluation import evaluate  # noqa: E402
from core.online.iteration import IterateConfig, iterate  # noqa: E402

# (name, keep fraction, epochs per round). The paper trains one epoch per round, so DPO-DM
# takes a quarter of the steps; the last variant gives it the same number of steps.
VARIANTS = (
    ("plain iterative DPO (100%, 1 epoch)", 1.0, 1.0),
    ("DPO-DM (top 25%, 1 epoch)", 0.25, 1.0),
    ("DPO-DM (top 25%, 4 epochs = same steps)", 0.25, 4.0),
)


def run(args: argparse.Namespace, work: Path) -> list[dict]:
    models = ensure_demo_models(DemoModelsConfig())
    prompts = held_out_prompts(args.eval_prompts, seed=0)
    rows = []
    for seed in args.seeds:
        for name, keep, epochs in VARIANTS:
            config = IterateConfig(
                policy=str(models.policy), reward_model=str(models.reward), rounds=args.rounds,
                prompts_per_round=args.prompts, responses_per_prompt=args.responses, keep_fraction=keep,
                epochs=epochs, max_new_tokens=args.max_new_tokens, lr=args.lr, batch_size=args.batch_size,
                per_device_batch_size=args.batch_size, gradient_checkpointing=False, seed=seed,
            )
            started = time.perf_counter()
            report = iterate(config, work / f"seed{seed}-keep{keep:g}-epochs{epochs:g}", prompts=online_prompts,
                             judge=OracleJudge(), resume=True)
            for round_report in report.rounds:
                evaluation = evaluate(round_report.policy_out, models.policy, prompts, judge=OracleJudge(),
                                      seed=seed, max_new_tokens=args.max_new_tokens)
                rows.append({
                    "variant": name, "seed": seed, "round": round_report.round + 1,
                    "pairs": round_report.pairs, "trained_on": round_report.selected,
                    "win_rate": 100 * evaluation.win_rate,
                    "oracle_reward": evaluation.policy_stats.mean_reward,
                    "chars": evaluation.policy_stats.mean_chars,
                })
            print(f"{name}, seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def spread(values: list[float], digits: int) -> str:
    return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(rows: list[dict]) -> str:
    lines = ["| variant | round | trained on (pairs) | win rate vs pi_0 % | oracle reward | length (chars) |",
             "|---|---|---|---|---|---|"]
    order = [variant[0] for variant in VARIANTS]
    keys = sorted({(r["variant"], r["round"]) for r in rows}, key=lambda k: (order.index(k[0]), k[1]))
    for variant, round_number in keys:
        group = [r for r in rows if r["variant"] == variant and r["round"] == round_number]
        cells = [spread([r[key] for r in group], digits)
                 for key, digits in (("trained_on", 0), ("win_rate", 1), ("oracle_reward", 2), ("chars", 0))]
        lines.append(f"| {variant} | {round_number} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=128, help="prompts per round")
    parser.add_argument("--responses", type=int, default=5, help="responses per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-4, help="tiny models need ~1e-4 (the paper's 5e-7 is for 8B)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-prompts", type=int, default=256)
    parser.add_argument("--work", type=Path, default=None, help="keep the rounds here (reruns resume)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        rows = run(args, args.work or Path(temp))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
