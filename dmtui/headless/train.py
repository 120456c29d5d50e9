"""`dmtui train`: DPO (or IPO, SLiC, KTO) on an export, in the foreground or as the app's subprocess.

Options are generated from `core.training.trainer.TrainConfig`, so the CLI and the engine never
drift. With ``--jsonl`` stdout carries one JSON object per line, an API the app reads::

    {"event": "start", "run": "RUN", "config": {...}, "resumed": false}
    {"event": "log", "step": 3, "total_steps": 120, "loss": 0.68, "reward_margin": 0.02, ...}
    {"event": "checkpoint", "path": "RUN/checkpoints/checkpoint-200", "step": 200}
    {"event": "done", "final": "RUN/final", "steps": 120, "summary": {...}}
    {"event": "cancelled", "step": 37, "checkpoint": "RUN/checkpoints/checkpoint-37"}   (exit 130)
    {"event": "error", "message": "...", "hint": "..."}                                  (exit 1)

SIGTERM and SIGINT stop at the end of the current step with a checkpoint (exit 130); a
second SIGINT stops at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import typing
from dataclasses import MISSING, asdict, fields
from pathlib import Path

from core.errors import DmtuiError
from core.training.trainer import TrainConfig, TrainError
from dmtui.headless.common import fail, path_argument

# Fields the command sets itself: --resume picks the run folder's latest checkpoint.
NOT_OPTIONS = ("resume_from",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model on an export with DPO, IPO, SLiC (hinge) or KTO",
        description="Train with TRL on an export folder written by `dmtui export`. Defaults follow the paper "
        "(beta 0.1, 2 epochs, lr 5e-7, cosine, warm-up 0.1, global batch 32).",
    )
    parser.add_argument("export", metavar="EXPORT", nargs="?", type=path_argument,
                        help="export folder (or its manifest.json); with --resume, default: the one the run used")
    parser.add_argument("--out", required=True, metavar="RUN", type=path_argument, help="run folder to create")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN from its latest checkpoint")
    parser.add_argument("--force", action="store_true", help="delete the run in RUN and start over")
    parser.add_argument("--jsonl", action="store_true", help="print progress as JSON lines on stdout")
    add_config_arguments(parser.add_argument_group("training (defaults from the paper)"))
    parser.set_defaults(handler=run)


def add_config_arguments(group) -> None:
    """One option per TrainConfig field, help from its metadata; unset ones stay out of args."""
    hints = typing.get_type_hints(TrainConfig)
    for spec in fields(TrainConfig):
        if spec.name in NOT_OPTIONS:
            continue
        default = spec.default if spec.default is not MISSING else spec.default_factory()
        kind = hints[spec.name]
        options: dict = {"dest": spec.name, "default": argparse.SUPPRESS,
                         "help": f"{spec.metadata['help']} (default: {_shown(default)})"}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            if typing.get_origin(kind) is typing.Literal:
                kind = str
            base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # X | None -> X
            if typing.get_origin(base) is tuple:
                options["nargs"] = "+"
                base = str
            options["type"] = base
            options["metavar"] = spec.name.upper()
            if "choices" in spec.metadata:
                options["choices"] = spec.metadata["choices"]
                options.pop("metavar")
        group.add_argument("--" + spec.name.replace("_", "-"), **options)


class _OptionsParser(argparse.ArgumentParser):
    def error(self, message: str):  # a ValueError for the caller, not an exit
        raise ValueError(message)


def parse_train_config(arguments: list[str]) -> TrainConfig:
    """The TrainConfig that `dmtui train` options make (the app's training-options field);
    ValueError naming a bad or unknown option."""
    parser = _OptionsParser(prog="dmtui train", add_help=False)
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(arguments), asdict(TrainConfig()))


def _shown(default) -> str:
    if isinstance(default, tuple):
        return " ".join(default)
    return "none" if default is None else str(default).replace("%", "%%")


def config_from_args(args: argparse.Namespace, base: dict) -> TrainConfig:
    given = {spec.name: getattr(args, spec.name) for spec in fields(TrainConfig) if hasattr(args, spec.name)}
    if isinstance(given.get("lora_target_modules"), list):
        given["lora_target_modules"] = tuple(given["lora_target_modules"])
    from core.training.trainer import config_from_json

    return config_from_json({**base, **given})


def prepare_run_folder(args: argparse.Namespace) -> tuple[dict, str | None]:
    """Refuse or clear RUN as the flags say; returns (base config, export) of a resumed run."""
    import shutil

    from core.training.trainer import RUN_JSON, read_run

    out = Path(args.out)
    if args.resume and args.force:
        fail("--resume and --force contradict each other", "--resume continues the run; --force starts over")
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if args.resume:
        record = read_run(out)
        return record["config"], args.export or record.get("data", {}).get("path")
    if occupied and not args.force:
        fail(f"{out} already exists", "pass --resume to continue its run, --force to start over, or another --out")
    if occupied:
        if not (out / RUN_JSON).is_file():
            fail(f"{out} is not a dmtui run folder (no {RUN_JSON}); --force will not delete it",
                 "choose another --out")
        shutil.rmtree(out)
    return asdict(TrainConfig()), args.export


class RunOutput:
    """Where a run's progress goes: JSON lines on stdout, a rich bar on a terminal, or lines on stderr.

    Under a multi-process launcher (accelerate, torchrun) only rank 0 speaks.
    """

    def __init__(self, jsonl: bool) -> None:
        from dmtui.headless.common import is_tty

        self.quiet = os.environ.get("RANK", "0") != "0"
        self.jsonl = jsonl and not self.quiet
        self.bar = None
        if not jsonl and not self.quiet and is_tty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            from dmtui.headless.common import stderr_console

            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                TextColumn("{task.description}"), console=stderr_console, transient=True)
            self.task = self.bar.add_task("", total=None)
            self.bar.start()

    def event(self, name: str, **data) -> None:
        if self.jsonl:
            print(json.dumps({"event": name, **data}), flush=True)

    def step(self, progress) -> None:
        """Every optimiser step (throttled by core), so the bar moves between metrics records."""
        if self.bar is not None:
            self.bar.update(self.task, completed=progress.done, total=progress.total)

    def log(self, record: dict) -> None:
        if self.quiet:
            return
        self.event("log", **record)
        text = ", ".join(f"{key} {record[key]:.3f}" for key in ("loss", "reward_margin", "reward_accuracy")
                         if record.get(key) is not None)
        if self.bar is not None:
            self.bar.update(self.task, completed=record["step"], total=record["total_steps"], description=text)
        elif not self.jsonl:
            print(f"step {record['step']}/{record['total_steps']}: {text}", file=sys.stderr)
        if record.get("warning") and not self.jsonl:
            print(f"warning: {record['warning']}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def stop_on_signals(cancel: threading.Event) -> None:
    """SIGTERM/SIGINT set `cancel` (a clean stop); a second SIGINT interrupts at once."""
    def handle(signum, frame):
        if cancel.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        cancel.set()
        print("dmtui: stopping after this step (a checkpoint is saved)...", file=sys.stderr)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run(args: argparse.Namespace) -> int:
    output = RunOutput(args.jsonl)
    try:
        return _train(args, output)
    except DmtuiError as error:
        from core.training.trainer import TrainingCancelled

        if isinstance(error, TrainingCancelled):
            output.event("cancelled", step=error.step, checkpoint=str(error.checkpoint) if error.checkpoint else None)
        else:
            output.event("error", message=error.message, hint=error.hint)
        raise
    finally:
        output.close()


def _train(args: argparse.Namespace, output: RunOutput) -> int:
    base, export = prepare_run_folder(args)
    if export is None:
        fail("train needs EXPORT, the folder `dmtui export --out` wrote")
    config = config_from_args(args, base)
    if args.resume:
        config.resume_from = "latest"
    output.event("start", run=args.out, export=str(export), config=asdict(config), resumed=args.resume)

    import warnings

    from core.training.trainer import train

    # The libraries' deprecation notices are for us, not for the person training.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\.")
    cancel = threading.Event()
    stop_on_signals(cancel)
    try:
        result = train(config, export, args.out, metrics_sink=output.log, progress=output.step, cancel=cancel,
                       on_checkpoint=lambda path: output.event("checkpoint", path=str(path),
                                                               step=int(path.name.rsplit("-", 1)[1])))
    except DmtuiError:
        raise
    except Exception as error:  # a library failure: one clear line, the traceback kept in the run folder
        raise _library_failure(error, Path(args.out)) from error
    output.event("done", final=str(result.final), steps=result.steps, summary=result.summary)
    if not args.jsonl and not output.quiet:
        print(f"trained {result.steps} steps; model in {result.final}")
    return 0


def _library_failure(error: Exception, out: Path) -> TrainError:
    import traceback

    hint = "run again with DMTUI_DEBUG=1 to see the traceback"
    if os.environ.get("DMTUI_DEBUG"):
        raise error
    if out.is_dir():
        try:
            (out / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            hint = f"the full traceback is in {out / 'error.log'}"
        except OSError:  # the disk that made training fail may not take the log either
            pass
    return TrainError(f"training failed: {type(error).__name__}: {error}", hint)
