"""`dmtui eval`: judge a trained policy against the initial one, by the demo oracle or a reward model.

On the demo world the judge is its oracle (`--judge oracle`, the default); on real prompts
(`--prompts FILE`, JSON lines with a "prompt" string) it is a reward model
(`--judge MODEL`), reading each exchange through its chat template as `dmtui score` does.
With ``--json`` stdout carries one object, `core.generation.evaluation.EvalReport.to_json`::

    {"policy": "RUN/final", "reference": "...", "prompts": 256, "samples_per_prompt": 1,
     "temperature": 0.7, "max_new_tokens": 64, "seed": 0, "prompt_seed": 0, "generation_backend": "transformers",
     "judge": "demo oracle", "device": "cpu", "dtype": "float32",
     "wins": 120, "ties": 80, "losses": 56, "comparisons": 256, "win_rate": 0.625,
     "policy_stats": {"mean_reward": 1.5, "mean_chars": 90.1, "mean_tokens": 21.0, "toxic_share": 0.01},
     "reference_stats": {...}, "examples": [...]}

``toxic_share`` is null with a reward-model judge (only the oracle knows what is toxic).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.errors import DmtuiError
from dmtui.headless.common import terminal_progress
from dmtui.headless.device_options import add_device_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    from core.generation.backends import GENERATION_BACKENDS
    from core.generation.evaluation import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPTS

    parser = subparsers.add_parser(
        "eval",
        help="win rate of a trained policy against the initial one, judged by the demo oracle or a reward model",
        description="Sample responses from a policy and a reference model to the same prompts (temperature 0.7, "
        "the same seed for both) and compare them with a judge's reward: win rate (ties count half), mean reward "
        "and length (and, with the demo oracle, the share of toxic responses). Demo prompts are judged by the "
        "demo world's oracle; your own prompts (--prompts FILE) by a reward model (--judge MODEL).",
    )
    parser.add_argument("--policy", required=True, metavar="RUN|MODEL",
                        help="a `dmtui train` run folder (its final/ model) or a model folder")
    parser.add_argument("--reference", metavar="MODEL", help="the model to beat, usually pi_0")
    parser.add_argument("--demo", action="store_true", help="use the demo world's pi_0 as the reference")
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS), metavar="N|FILE",
                        help=f"N held-out demo prompts to draw (default: {DEFAULT_PROMPTS}), or a JSON-lines FILE "
                        'with one {"prompt": "..."} per line')
    parser.add_argument("--judge", default="oracle", metavar="oracle|MODEL",
                        help="who rewards the responses: the demo world's oracle (demo prompts only), or a "
                        "sequence-classification reward model, folder or hub id (default: oracle)")
    parser.add_argument("--samples", type=int, default=1, metavar="K", help="responses per prompt (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of both models (default: 0)")
    parser.add_argument("--prompt-seed", type=int, default=0, help="seed of the held-out prompt draw (default: 0)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default: 0.7)")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                        help=f"longest response in tokens (default: {DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--generation-backend", choices=GENERATION_BACKENDS, default="auto",
                        help="what samples the responses: vllm, transformers, or auto = vLLM when it is installed "
                        "and a GPU is present, else transformers (default: auto)")
    add_device_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from transformers.utils import logging as transformers_logging

    from core.demo.oracle import OracleJudge
    from core.generation.evaluation import RewardModelJudge, evaluate, final_model
    from core.models.load import LoadedModels

    if args.demo and args.reference:
        raise DmtuiError("--demo and --reference both name the reference", "pass one of them")
    if not args.demo and not args.reference:
        raise DmtuiError("no reference model to compare with", "pass --reference MODEL (pi_0), or --demo")
    if args.samples < 1:
        raise DmtuiError("--samples must be at least 1")
    prompts, demo_prompts = _prompts(args.prompts, args.prompt_seed)
    if args.judge == "oracle" and not demo_prompts:
        raise DmtuiError(f"the demo oracle only knows the demo world's prompts, not those of {args.prompts}",
                         "pass --judge MODEL: a reward model to judge the responses")
    # The libraries' notices and loading bars are for us, not for the person evaluating.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|torch)\.")
    transformers_logging.disable_progress_bar()
    models = LoadedModels(args.device, args.dtype)
    judge = OracleJudge() if args.judge == "oracle" else RewardModelJudge(args.judge, models)
    with terminal_progress() as progress:
        reference = args.reference or _demo_reference(progress)
        report = evaluate(
            final_model(args.policy), reference, prompts, judge=judge, samples_per_prompt=args.samples,
            temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed,
            backend=args.generation_backend, models=models, progress=progress,
        )
    if args.json:
        print(json.dumps({**report.to_json(), "prompt_seed": args.prompt_seed}, ensure_ascii=False))
    else:
        print_report(report)
    return 0


def _prompts(value: str, prompt_seed: int) -> tuple[list[str], bool]:
    """(prompts, drawn from the demo world?) for --prompts N|FILE."""
    from core.demo.oracle import held_out_prompts
    from core.generation.evaluation import read_prompts_file

    if Path(value).is_file():
        return read_prompts_file(value), False
    try:
        count = int(value)
    except ValueError:
        raise DmtuiError(f"--prompts {value!r}: not a number, and no such file",
                         'pass a count of demo prompts, or a JSON-lines file with one {"prompt": "..."} per line') \
            from None
    if count < 1:
        raise DmtuiError("--prompts must be at least 1")
    return held_out_prompts(count, prompt_seed), True


def _demo_reference(progress) -> str:
    from core.demo.models import DemoModelsConfig, ensure_demo_models

    return str(ensure_demo_models(DemoModelsConfig(), progress=progress).policy)


def print_report(report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"[bold]{escape(str(report.policy))}[/] vs [bold]{escape(str(report.reference))}[/]")
    console.print(f"{report.prompts} prompts, {report.samples_per_prompt} response(s) each, temperature "
                  f"{report.temperature:g}, seed {report.seed}, sampled with {report.generation_backend} on "
                  f"{report.device} ({report.dtype}), judged by {escape(report.judge)}")
    console.print(f"win rate [bold]{100 * report.win_rate:.1f}%[/]  "
                  f"({report.wins} wins, {report.ties} ties, {report.losses} losses)")
    table = Table(box=None, header_style="bold", pad_edge=False)
    toxic = report.policy_stats.toxic_share is not None
    for column in ("", "reward", "chars", "tokens", *(["toxic"] if toxic else [])):
        table.add_column(column, justify="right" if column else "left")
    for name, stats in (("policy", report.policy_stats), ("reference", report.reference_stats)):
        table.add_row(name, f"{stats.mean_reward:.2f}", f"{stats.mean_chars:.0f}", f"{stats.mean_tokens:.1f}",
                      *([f"{100 * stats.toxic_share:.1f}%"] if toxic else []))
    console.print(table)
    for example in report.examples:
        console.print(f"\n[dim]prompt[/] {escape(example['prompt'])}", soft_wrap=True)
        console.print(f"  [dim]policy    ({example['policy_reward']:+.1f})[/] {escape(example['policy'])}",
                      soft_wrap=True)
        console.print(f"  [dim]reference ({example['reference_reward']:+.1f})[/] {escape(example['reference'])}",
                      soft_wrap=True)
