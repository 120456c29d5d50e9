"""`dmtui score`: margins of every pair into the workspace's score tables (core.scoring.run).

Resumable: pairs already scored with the same models and settings are reused, so a
rerun after a crash, a Ctrl-C or appended rows scores only what is missing. Ctrl-C
stops at the next batch (every checkpoint written is kept; a second Ctrl-C quits at
once); exit code 130. SIGTERM stops the same way, at the next batch.

With ``--jsonl`` stdout carries one JSON object per line, an API the app reads (the
same shape as `dmtui train --jsonl`)::

    {"event": "progress", "stage": "external", "done": 300, "total": 1200, "unit": "pairs", ...}
    {"event": "done", "sources": {...}, "device": "cpu", "workspace": "WS", ...}
    {"event": "cancelled", "message": "...", "sources": {...}}                     (exit 130)
    {"event": "error", "message": "...", "hint": "..."}                            (exit 1)

Sharded (core.scoring.distributed): under torchrun or `accelerate launch` every rank scores its
share, rank 0 merges the tables and alone prints the report and draws progress; the
other ranks print only their errors, prefixed with their rank. `--rank R --world-size W`
runs one rank alone (to redo a rank that died); it merges when its work completes the tables.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import DmtuiError
from core.selection.selector import MARGIN_SOURCES
from dmtui.headless.common import (
    add_dataset_arguments,
    load_config_from_args,
    path_argument,
    rich_progress,
    stderr_console,
)
from dmtui.headless.device_options import add_device_arguments

if TYPE_CHECKING:
    from core.scoring.distributed import Shard

SOURCE_NAMES = MARGIN_SOURCES
DEMO_OPTIONS = {"seed_lr": "seed_lr", "seed_per_device_batch_size": "seed_device_batch", "seed_pairs": "seed_pairs",
                "seed_epochs": "seed_epochs", "seed_eval_pairs": "seed_eval_pairs"}
"""The option (argparse dest) of each ScoringConfig setting in core.demo.models.DEMO_SCORING."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score every pair: external (reward model), implicit (pi_1 vs pi_0) and IFD margins",
        description="Score a dataset's pairs into its workspace (created next to the dataset unless "
        "--workspace names one). Already scored pairs are reused, so reruns resume.",
    )
    add_dataset_arguments(parser, required=False)
    parser.add_argument("--workspace", metavar="DIR", type=path_argument, help="workspace folder (default: DATA.dmtui next to DATA)")
    parser.add_argument("--accept-changes", action="store_true",
                        help="the dataset changed since the workspace saw it: score the new version")
    models = parser.add_argument_group("models")
    models.add_argument("--sources", default="external,implicit", metavar="LIST",
                        help="comma-separated margin sources: external, implicit, ifd (default: external,implicit)")
    models.add_argument("--reward-model", metavar="M", help="reward model for external margins (folder or model id)")
    models.add_argument("--reference-model", metavar="M", help="pi_0, the SFT model (implicit and IFD margins)")
    models.add_argument("--policy-model", metavar="M",
                        help="pi_1 (folder, model id or LoRA adapter); default: seed DPO of pi_0 on D0")
    models.add_argument("--demo", action="store_true",
                        help="use the demo world's tiny models (built if missing) and, without DATA, its dataset")
    models.add_argument("--trust-remote-code", action="store_true", help="allow models that ship Python code")
    models.add_argument("--allow-pickle", action="store_true", help="allow pickle weight files (can run code)")
    seed = parser.add_argument_group("seed policy pi_1 (when --policy-model is not given)")
    seed.add_argument("--seed-split", choices=("cross-fit", "exclude"),
                      help="keep D0 from inflating its own margins: cross-fit (default; two pi_1, each scores "
                           "the half of the pairs it did not train on) or exclude (D0 gets no implicit margin)")
    seed.add_argument("--seed-pairs", type=int, metavar="N",
                      help="most pairs one pi_1 trains on (default 2000, with --demo 400; small datasets: all "
                           "of a cross-fit half, 10%% under exclude; at least 64)")
    seed.add_argument("--seed-epochs", type=float, metavar="E",
                      help="most DPO epochs over D0 (default 10, with --demo 2); training stops at the held-out "
                           "accuracy plateau")
    seed.add_argument("--seed-steps", type=int, metavar="N", help="most DPO optimiser steps (overrides --seed-epochs)")
    seed.add_argument("--seed-patience", type=int, metavar="N",
                      help="held-out evaluations (one per half epoch) without a new best before stopping (default 4)")
    seed.add_argument("--seed-eval-pairs", type=int, metavar="N",
                      help="most held-out pairs each pi_1's accuracy is measured on (default 1000; with --demo 200)")
    seed.add_argument("--seed-lora", action="store_true",
                      help="train pi_1 as a LoRA adapter on a frozen pi_0 (bf16 on GPU): a 7-8B pi_0 fits one "
                           "80 GB GPU")
    seed.add_argument("--seed-lora-r", type=int, metavar="R", help="LoRA rank of --seed-lora (default 16)")
    seed.add_argument("--seed-device-batch", type=int, metavar="N",
                      help="most pairs one device takes per forward in seed DPO; lower it on out-of-memory "
                           "(default 4; with --demo 32)")
    seed.add_argument("--seed-lr", type=float, metavar="LR",
                      help="DPO learning rate (default 5e-7; with --demo 1e-4)")
    seed.add_argument("--seed-beta", type=float, metavar="B", help="DPO beta (default 0.1)")
    seed.add_argument("--seed", type=int, metavar="N", help="seed of the D0 draw and of training (default 0)")
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--batch-tokens", type=int, metavar="N", help="padded tokens per forward (default 8192)")
    add_device_arguments(run_group)
    run_group.add_argument("--max-length", type=int, metavar="N",
                           help="longest prompt + response in tokens; longer pairs are cut, chosen and rejected "
                           "under one context, and counted (default: the models' context, at most 4096)")
    run_group.add_argument("--min-prompt-tokens", type=int, metavar="N",
                           help="context tokens a cut keeps at least (default: half the token limit)")
    run_group.add_argument("--no-reward-template", action="store_true",
                           help="standard rows reach the reward model as plain prompt + response + EOS, not "
                           "through its chat template as one user and one assistant turn")
    run_group.add_argument("--skip-truncated", action="store_true",
                           help="skip over-long pairs (margin NaN) instead of truncating them")
    run_group.add_argument("--checkpoint-every", type=int, metavar="N",
                           help="pairs per saved checkpoint (default 1000)")
    shards = parser.add_argument_group(
        "sharding", "under torchrun or accelerate launch each rank scores its share of the pairs on its own "
        "device and rank 0 merges; these options run one rank alone, e.g. to redo a rank that died")
    shards.add_argument("--rank", type=int, metavar="R", help="score only the pairs i with i %% W == R")
    shards.add_argument("--world-size", type=int, metavar="W", help="how many ranks share the pairs")
    parser.add_argument("--json", action="store_true", help="print the scoring report as one JSON object on stdout")
    parser.add_argument("--jsonl", action="store_true",
                        help="print progress and the report as JSON lines on stdout (what the app reads)")
    parser.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace):
    """A ScoringConfig of the options given; the dataclass supplies every default."""
    from core.scoring.config import ScoringConfig

    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    unknown = [s for s in sources if s not in SOURCE_NAMES]
    if unknown or not sources:
        raise DmtuiError(f"--sources {args.sources!r}: unknown margin source {unknown[0]!r}" if unknown
                         else "--sources names no margin source", f"choose from {', '.join(SOURCE_NAMES)}")
    given = {
        "reward_model": args.reward_model, "reference_model": args.reference_model,
        "policy_model": args.policy_model, "seed_pairs": args.seed_pairs, "seed_epochs": args.seed_epochs,
        "seed_steps": args.seed_steps, "seed_lr": args.seed_lr, "seed_beta": args.seed_beta, "seed": args.seed,
        "seed_split": args.seed_split, "seed_patience": args.seed_patience, "seed_lora_r": args.seed_lora_r,
        "seed_per_device_batch_size": args.seed_device_batch, "seed_eval_pairs": args.seed_eval_pairs,
        "batch_tokens": args.batch_tokens, "device": args.device, "dtype": args.dtype,
        "max_length": args.max_length, "min_prompt_tokens": args.min_prompt_tokens,
        "checkpoint_every": args.checkpoint_every,
    }
    flags = {"skip_truncated": args.skip_truncated, "trust_remote_code": args.trust_remote_code,
             "allow_pickle": args.allow_pickle, "reward_template": not args.no_reward_template,
             "seed_lora": args.seed_lora}
    return ScoringConfig(sources=sources, **{k: v for k, v in given.items() if v is not None}, **flags)


def fill_demo_models(args: argparse.Namespace, progress: Callable) -> None:
    """--demo: the demo models wherever no model was named, and the demo dataset without DATA."""
    from core.demo.models import DEMO_SCORING, DemoModelsConfig, ensure_demo_models

    if args.data is None:
        from core.demo.sample_data import demo_dataset

        args.data = str(demo_dataset())
    models = ensure_demo_models(DemoModelsConfig(), progress=progress)
    args.reward_model = args.reward_model or str(models.reward)
    args.reference_model = args.reference_model or str(models.policy)
    for setting, value in DEMO_SCORING.items():  # the demo's seed DPO, where no option says otherwise
        option = DEMO_OPTIONS[setting]
        if getattr(args, option) is None:
            setattr(args, option, value)


def run(args: argparse.Namespace) -> int:
    from core.scoring.distributed import detect_shard

    shard = detect_shard(args.rank, args.world_size)
    try:
        return run_shard(args, shard)
    except DmtuiError as error:
        if shard.sharded:
            error.message = f"rank {shard.rank} of {shard.world_size}: {error.message}"
        if args.jsonl and shard.speaks:
            emit_failure(error)
        raise


def emit_failure(error: DmtuiError) -> None:
    """The last JSON line of a run that did not finish: cancelled (with how far it got) or an error."""
    from core.errors import Cancelled

    if isinstance(error, Cancelled):
        report = getattr(error, "report", None)
        print(json.dumps({"event": "cancelled", "message": error.message,
                          **(event_report(report) if report is not None else {})}), flush=True)
    else:
        print(json.dumps({"event": "error", "message": error.message, "hint": error.hint}), flush=True)


def event_report(report) -> dict:
    """The report for a --jsonl event: counts, not id lists (a line stays small whatever the
    dataset; the token-identical pairs are marked in the score tables)."""
    data = report.to_json()
    for source in data["sources"].values():
        source.pop("token_identical_ids", None)
    return data


@contextmanager
def jsonl_progress() -> Iterator[Callable]:
    """A core progress callback printing each (already throttled) snapshot as a JSON line."""
    def update(report) -> None:
        print(json.dumps({"event": "progress", "stage": report.stage, "done": report.done, "total": report.total,
                          "unit": report.unit, "message": report.message,
                          "elapsed_s": round(report.elapsed_s, 3)}), flush=True)

    yield update


def progress_display(args: argparse.Namespace, shard: Shard):
    """JSON lines with --jsonl, else rich bars; nothing on the ranks that do not speak."""
    if not shard.speaks:
        return nullcontext(None)
    return jsonl_progress() if args.jsonl else rich_progress()


def run_shard(args: argparse.Namespace, shard: Shard) -> int:
    """Score this process's shard (the whole dataset when it runs alone), then merge."""
    from transformers.utils import logging as transformers_logging

    from core.scoring.distributed import (
        combine_reports,
        gather_on_main,
        merge_shards,
        process_group,
    )
    from core.scoring.run import ScoringCancelled, score

    transformers_logging.disable_progress_bar()  # its tqdm bars would tear the rich display
    cancel = threading.Event()
    cancelled = None
    with stop_on_interrupt(cancel), progress_display(args, shard) as progress:
        if shard.main:  # before the group forms: the other ranks wait there until this is ready
            prepared = prepare(args, shard, progress, cancel)
        with process_group(shard):
            if not shard.main:
                prepared = prepare(args, shard, progress, cancel)
            workspace, dataset, config, seed_policy = prepared
            try:
                report = score(dataset, workspace, config, progress=shard_progress(progress, shard),
                               cancel=cancel, rank=shard.rank, world_size=shard.world_size)
            except ScoringCancelled as stopped:
                cancelled, report = stopped, stopped.report
            # Stopped or not, every rank meets in this gather (so no rank waits on one that left,
            # and every part is written once it returns); rank 0 merges only if none stopped short.
            gathered = gather_on_main((report, cancelled is not None), shard)
    if not shard.speaks:
        if cancelled is not None:
            raise cancelled
        return 0
    assert gathered is not None
    report = combine_reports([rank_report for rank_report, _ in gathered])
    some_rank_stopped = any(stopped for _, stopped in gathered)
    merge = merge_shards(dataset, workspace, report) if shard.sharded and not some_rank_stopped else None
    if seed_policy is not None and seed_policy["trained_now"]:
        report.seed_policy = seed_policy
    if args.jsonl:
        if cancelled is None:
            print(json.dumps({"event": "done", **event_report(report), "workspace": str(workspace.root),
                              "cancelled": some_rank_stopped}), flush=True)
    elif args.json:
        print(json.dumps({**report.to_json(), "workspace": str(workspace.root), "cancelled": some_rank_stopped,
                          **({"merge": merge.to_json()} if merge is not None else {})}))
    else:
        print_report(report, workspace.root)
        if merge is not None:
            print_merge(merge, shard.world_size)
    if some_rank_stopped and cancelled is None:
        stderr_console.print("another rank stopped before its shard was done: nothing was merged; "
                               "run the same command again to finish", markup=False)
    if cancelled is not None:
        raise cancelled
    return 0


def prepare(args: argparse.Namespace, shard: Shard, progress: Callable | None, cancel: threading.Event):
    """(workspace, dataset, config, seed policy info or None): what scoring needs.

    Rank 0 of a sharded run trains the seed policy pi_1 here, before the others score.
    """
    from core.scoring.config import seed_config
    from core.scoring.distributed import launcher_hidden, shard_device
    from core.scoring.seed_policy import prepare_seed_policy
    from core.store.workspace import Workspace, is_workspace

    if args.demo:
        fill_demo_models(args, progress)
    if args.data is None:
        raise DmtuiError("no dataset to score", "pass DATA (a dataset file or a workspace folder), or --demo")
    config = config_from_args(args)
    config = replace(config, device=shard_device(config.device, shard))
    config.validate()
    if is_workspace(args.data):
        workspace = Workspace.open(args.data, accept_changes=args.accept_changes)
    else:
        workspace = Workspace.open_or_create(args.data, args.workspace, load_config_from_args(args),
                                             accept_changes=args.accept_changes)
    dataset = workspace.load(progress=progress, cancel=cancel)
    seed_policy = None
    if shard.sharded and shard.main:  # alone, `score` makes pi_1 itself
        with launcher_hidden():  # an ordinary one-process training, not data-parallel over the ranks
            seed_policy = prepare_seed_policy(dataset, workspace, seed_config(config), progress=progress,
                                              cancel=cancel)
    return workspace, dataset, config, seed_policy


def shard_progress(progress: Callable | None, shard: Shard) -> Callable | None:
    """The bars of a sharded run say that they count this rank's share of the pairs."""
    if progress is None or not shard.sharded:
        return progress
    share = f"rank {shard.rank}'s share (1/{shard.world_size})"
    return lambda report: progress(replace(report, message=report.message or share))


@contextmanager
def stop_on_interrupt(cancel: threading.Event) -> Iterator[None]:
    """The first Ctrl-C or a SIGTERM sets `cancel` (scoring stops at the next batch); a second
    Ctrl-C quits now."""
    def interrupt(signum, frame) -> None:
        if cancel.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        cancel.set()
        stderr_console.print("[yellow]stopping after the current batch (Ctrl-C again to quit now)[/]")

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def print_report(report, workspace_root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from core.scoring.seed_report import describe

    console = Console(highlight=False)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("source", "scored", "reused", "truncated", "skipped", "identical", "pairs/s", "seconds",
                   "fingerprint"):
        table.add_column(column, justify="left" if column in ("source", "fingerprint") else "right")
    for name, source in report.sources.items():
        rate = source.pairs_per_s
        table.add_row(name, f"{source.scored:,}", f"{source.reused:,}", f"{source.truncated:,}",
                      f"{source.skipped_truncated:,}", f"{len(source.token_identical_ids):,}",
                      f"{rate:,.1f}" if rate else "-", f"{source.seconds:.1f}", source.fingerprint)
    console.print(table)
    for name, source in report.sources.items():
        console.print(f"{name}: {source.truncation_summary()}", markup=False)
        if source.boundary_moved:
            console.print(f"{name}: {source.boundary_summary()}", markup=False)
        if source.token_identical_ids:
            shown = ", ".join(source.token_identical_ids[:5]) + (" ..." if len(source.token_identical_ids) > 5 else "")
            console.print(f"{name}: {len(source.token_identical_ids)} pairs are token-identical as scored "
                          f"(margin NaN): {shown}")
        for note in source.notes:
            console.print(f"{name}: {note}", markup=False)
    quality = describe(report.seed_policy, report.implicit_external_spearman)
    if quality:
        console.print(quality, markup=False)
    if report.seed_policy:
        console.print(f"pi_1 in {report.seed_policy['path']}", markup=False)
    console.print(f"scores in {workspace_root / 'scores'}  (device {report.device}, {report.dtype})", markup=False)


def print_merge(merge, world_size: int) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    if merge.merged:
        console.print(f"merged the {world_size} ranks' parts of {', '.join(merge.merged)} into one table each")
    for name, missing in merge.missing.items():
        ranks = ", ".join(str(rank) for rank in missing["ranks"])
        console.print(f"{name}: {missing['pairs']:,} pairs are not scored yet, from rank(s) {ranks} of "
                      f"{world_size}: run them (--rank R --world-size {world_size}); the last one merges")
