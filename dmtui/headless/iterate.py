"""`dmtui iterate`: iterative (online) DPO-DM, generate -> score -> select -> train per round.

See core.online.iteration for what each round does and writes. With ``--json`` stdout carries one
object, `core.online.iteration.IterateReport.to_json`::

    {"out_dir": "DIR", "final_policy": "DIR/round-2/final",
     "rounds": [{"round": 0, "policy_in": "...", "policy_out": "DIR/round-0/final", "prompts": 256,
                 "generations": 1280, "pairs": 250, "tied_prompts": 6, "selected": 63,
                 "sources": ["external"], "m2": {"external": 3.0}, "mean_reward": 0.3,
                 "mean_chars": 80.1, "mean_oracle_reward": 1.2, "train_steps": 2,
                 "generation_backend": "transformers", "resumed_stages": []}, ...]}

The run folder can be moved (or copied to another machine) and resumed there with --resume.
"""

from __future__ import annotations

import argparse
import json

from core.errors import DmtuiError
from dmtui.headless.common import path_argument, terminal_progress
from dmtui.headless.device_options import add_device_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    from core.generation.backends import GENERATION_BACKENDS
    from core.online.iteration import IterateConfig

    defaults = IterateConfig()
    parser = subparsers.add_parser(
        "iterate",
        help="iterative (online) DPO-DM: sample, score, pair best/worst, keep the top share by DM-MUL, train",
        description="Each round samples responses from the current policy, scores them with the reward model, "
        "pairs best-of-N with worst-of-N, keeps the top --keep share by DM-MUL (external reward margin x "
        "implicit margin against pi_0) and trains one epoch of DPO from the current policy. --keep 1.0 is "
        "plain iterative DPO. Interrupted runs continue with --resume, also after the run folder was moved.",
    )
    parser.add_argument("--policy", metavar="MODEL", help="pi_0, the starting policy and DPO reference")
    parser.add_argument("--reward-model", metavar="MODEL", help="sequence-classification reward model")
    parser.add_argument("--demo", action="store_true",
                        help="use the demo world's pi_0 and reward model (built on first use) for what is not given")
    parser.add_argument("--prompts-file", metavar="JSONL", type=path_argument,
                        help='prompts, one JSON object with a "prompt" string per line (default: demo prompts)')
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help=f"rounds (default: {defaults.rounds})")
    parser.add_argument("--prompts", type=int, default=defaults.prompts_per_round, metavar="N",
                        help=f"prompts per round (default: {defaults.prompts_per_round})")
    parser.add_argument("--responses", type=int, default=defaults.responses_per_prompt, metavar="N",
                        help=f"responses per prompt (default: {defaults.responses_per_prompt})")
    parser.add_argument("--keep", type=float, default=defaults.keep_fraction, metavar="FRACTION",
                        help=f"share of each round's pairs kept by DM-MUL; 1.0 keeps all (default: "
                        f"{defaults.keep_fraction})")
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, metavar="N")
    parser.add_argument("--generation-backend", choices=GENERATION_BACKENDS, default=defaults.generation_backend,
                        help="what samples the responses: vllm, transformers, or auto = vLLM when it is installed "
                        f"and a GPU is present, else transformers (default: {defaults.generation_backend})")
    add_device_arguments(parser)
    parser.add_argument("--m1", type=float, default=defaults.m1, help="DM-MUL lower clip (default: -2)")
    parser.add_argument("--m2", default="auto", help="DM-MUL upper clip, a number or auto (default: auto)")
    parser.add_argument("--beta", type=float, default=defaults.beta)
    parser.add_argument("--lr", type=float, default=None,
                        help="DPO learning rate (default: 5e-7; 1e-4 with --demo's tiny models)")
    parser.add_argument("--batch-size", type=int, default=None, help="DPO global batch in pairs (default: 32)")
    parser.add_argument("--per-device-batch-size", type=int, default=defaults.per_device_batch_size)
    parser.add_argument("--max-steps", type=int, default=None, help="cap each round's DPO steps")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", metavar="DIR", default="iterate-run", type=path_argument, help="run folder (default: ./iterate-run)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(handler=run)


def _m2(text: str):
    if text.strip() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise DmtuiError(f"--m2 {text!r}: not a number or auto") from None


def run(args: argparse.Namespace) -> int:
    import warnings

    from transformers.utils import logging as transformers_logging

    from core.online.iteration import IterateConfig, iterate

    if not args.demo and not (args.policy and args.reward_model):
        raise DmtuiError("iterate needs a policy (pi_0) and a reward model",
                         "pass --policy MODEL --reward-model MODEL, or --demo for the demo world's models")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|torch)\.")
    transformers_logging.disable_progress_bar()
    with terminal_progress() as progress:
        policy, reward_model = args.policy, args.reward_model
        if args.demo and not (policy and reward_model):
            from core.demo.models import DemoModelsConfig, ensure_demo_models

            models = ensure_demo_models(DemoModelsConfig(), progress=progress)
            policy, reward_model = policy or str(models.policy), reward_model or str(models.reward)
        tiny = args.demo and args.policy is None
        config = IterateConfig(
            policy=policy, reward_model=reward_model, rounds=args.rounds, prompts_per_round=args.prompts,
            prompts_file=args.prompts_file, responses_per_prompt=args.responses, temperature=args.temperature,
            max_new_tokens=args.max_new_tokens, generation_backend=args.generation_backend, keep_fraction=args.keep,
            m1=args.m1, m2=_m2(args.m2), beta=args.beta,
            lr=args.lr if args.lr is not None else (1e-4 if tiny else 5e-7),
            batch_size=args.batch_size or (8 if tiny else 32), per_device_batch_size=args.per_device_batch_size,
            max_steps=args.max_steps, gradient_checkpointing=not tiny, seed=args.seed,
            device=args.device, dtype=args.dtype,
        )
        prompts = judge = None
        if args.prompts_file is None:  # the demo world's prompts, and its oracle beside the reward model
            from core.demo.oracle import OracleJudge, online_prompts

            prompts, judge = online_prompts, OracleJudge()
        report = iterate(config, args.out, prompts=prompts, judge=judge, resume=args.resume, progress=progress)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        print_report(report)
    return 0


def print_report(report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("round", "pairs", "tied", "kept", "sources", "reward", "oracle", "chars", "steps", "backend",
                   "resumed"):
        table.add_column(column, justify="left" if column in ("sources", "backend", "resumed") else "right")
    for r in report.rounds:
        oracle = "-" if r.mean_oracle_reward is None else f"{r.mean_oracle_reward:.2f}"
        table.add_row(str(r.round), str(r.pairs), str(r.tied_prompts), str(r.selected), "+".join(r.sources),
                      f"{r.mean_reward:.2f}", oracle, f"{r.mean_chars:.0f}", str(r.train_steps or "-"),
                      r.generation_backend, ",".join(r.resumed_stages) or "-")
    console.print(table)
    console.print(f"final policy: {report.final_policy}", markup=False)
