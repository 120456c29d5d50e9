"""Training on a curated subset with TRL: DPO, IPO, SLiC (hinge) or KTO.

`train(config, data, out_dir, metrics_sink=...)` reads an export folder (or its
manifest, or pairs already in memory), turns it into TRL's format, and trains. A run
folder holds::

    RUN/
      run.json        the full TrainConfig, the data it read, library versions, the outcome
      metrics.jsonl   one record per logging step (see core.training.callbacks)
      checkpoints/    checkpoint-<step>/ folders the run can resume from
      final/          the trained model (save_pretrained, safetensors) and its tokenizer;
                      with LoRA the adapter, whose adapter_config.json names its base

TRL's formats, with the prompt always explicit (an implicit-prompt export has its shared
beginning split off by the loader)::

    standard:        {"prompt": "2+2?", "chosen": " 4", "rejected": " 5"}
    conversational:  {"prompt": [{"role": "user", "content": "2+2?"}],
                      "chosen": [{"role": "assistant", "content": "4"}], "rejected": [...]}
    KTO (unpaired):  {"prompt": ..., "completion": <chosen>, "label": True}
                     {"prompt": ..., "completion": <rejected>, "label": False}

The same `train` makes pi_1 for implicit-margin scoring: `train_seed_policy` is DPO of
pi_0 on the seed set D0 with pi_0 as reference, returning the path of the final model.

Models load through core.models.load (safetensors only unless ``allow_pickle``, no remote code
unless ``trust_remote_code``, LoRA adapters merged) and are handed to TRL as instances,
the reference model too, so TRL never loads a model under looser rules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.errors import Cancelled, DmtuiError
from core.io.versions import library_versions
from core.progress import ProgressFn, Reporter
from core.training.callbacks import MetricsSink, progress_callback

if TYPE_CHECKING:
    from transformers import Trainer

LossName = Literal["dpo", "ipo", "hinge", "kto"]
LOSSES: tuple[str, ...] = ("dpo", "ipo", "hinge", "kto")
TRL_DPO_LOSS = {"dpo": "sigmoid", "ipo": "ipo", "hinge": "hinge"}
RUN_JSON, METRICS_JSONL, CHECKPOINTS, FINAL = "run.json", "metrics.jsonl", "checkpoints", "final"
FROZEN_DTYPES = ("auto", "float32", "bfloat16")
_LIBRARIES = ("dmtui", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed")


def _option(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with the help text the CLI shows (``metadata["help"]``)."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything a training run depends on; defaults are the paper's (docs/method.md, "Step 3: training")."""

    model: str | None = _option(None, "policy to train (pi_0): a local folder or a Hugging Face model id")
    ref_model: str | None = _option(None, "reference model; none means the same as --model")
    loss: LossName = _option(
        "dpo",
        "dpo (sigmoid), ipo, hinge (SLiC) or kto (pairs split into "
        "desirable chosen and undesirable rejected completions)",
        choices=LOSSES,
    )
    beta: float = _option(
        0.1,
        "strength of the pull toward the reference model; 0.01 with 2 epochs broke "
        "models in the paper (the collapse warning watches for it)",
    )
    epochs: float = _option(2.0, "passes over the data")
    lr: float = _option(5e-7, "peak learning rate of AdamW (5e-7 is for 8B models; tiny models want ~1e-4)")
    scheduler: str = _option("cosine", "learning-rate schedule (any transformers lr_scheduler_type)")
    warmup_ratio: float = _option(0.1, "share of the steps spent warming the learning rate up")
    batch_size: int = _option(
        32,
        "global batch in pairs (KTO: in completions), reached as per-device batch x "
        "gradient accumulation x processes; see split_batch",
    )
    per_device_batch_size: int = _option(4, "most pairs one device processes at once; lower it on out-of-memory")
    max_length: int | None = _option(1024, "longest prompt + response in tokens; longer ones are truncated")
    seed: int = _option(0, "seed of initialisation, data order and dropout")
    lora: bool = _option(False, "train a LoRA adapter (peft) instead of every weight")
    lora_r: int = _option(16, "LoRA rank")
    lora_alpha: int = _option(32, "LoRA scaling alpha")
    lora_target_modules: tuple[str, ...] = _option(
        ("all-linear",), "modules LoRA adapts (peft's names; 'all-linear' = every linear layer but the output head)"
    )
    precision: str = _option(
        "auto",
        "auto (bf16 on a GPU that has it, else fp16; fp32 on CPU), bf16, fp16 or fp32",
        choices=("auto", "bf16", "fp16", "fp32"),
    )
    frozen_dtype: str = _option(
        "auto",
        "dtype of the weights that do not train: the reference model, and with LoRA "
        "the base model too (auto: bfloat16 when training in bf16, else float32)",
        choices=FROZEN_DTYPES,
    )
    gradient_checkpointing: bool = _option(True, "recompute activations in the backward pass to save memory")
    logging_steps: int = _option(10, "optimiser steps between two metrics records")
    save_steps: int = _option(
        200, "optimiser steps between two checkpoints (one is also saved at the end and when a run is stopped)"
    )
    save_total_limit: int | None = _option(3, "checkpoints to keep (oldest deleted first); none keeps all")
    resume_from: str | None = _option(None, "continue from this checkpoint folder, or 'latest' in the run folder")
    deepspeed: str | None = _option(None, "DeepSpeed JSON config, handed to TRL untouched")
    fsdp: str | None = _option(None, "FSDP options, e.g. 'full_shard auto_wrap', handed to TRL untouched")
    fsdp_config: str | None = _option(None, "FSDP JSON config, handed to TRL untouched")
    trust_remote_code: bool = _option(False, "allow models that ship their own Python code")
    allow_pickle: bool = _option(False, "allow pickle weight files (they can run code when loaded)")
    max_steps: int | None = _option(None, "stop after this many optimiser steps (overrides epochs)")
    collapse_ratio: float = _option(
        0.5, "warn when chosen and rejected log-probs have both fallen by more than this share of their starting size"
    )
    collapse_window: int = _option(
        3, "recent metrics records whose median the collapse warning compares with the start"
    )

    def validate(self) -> None:
        if not self.model:
            raise TrainError("no model to train", "pass --model (a local folder or a model id)")
        if self.loss not in LOSSES:
            raise TrainError(f"unknown loss {self.loss!r}", f"one of: {', '.join(LOSSES)}")
        if self.batch_size < 1 or self.per_device_batch_size < 1:
            raise TrainError("batch sizes must be at least 1")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainError(f"warmup_ratio {self.warmup_ratio} is not in [0, 1)")
        if self.loss == "kto" and self.lora and self.ref_model not in (None, self.model):
            raise TrainError("KTO with LoRA uses the base model as its reference", "leave --ref-model out")
        if self.frozen_dtype not in FROZEN_DTYPES:
            raise TrainError(f"unknown frozen dtype {self.frozen_dtype!r}", f"one of: {', '.join(FROZEN_DTYPES)}")


class TrainError(DmtuiError):
    """A run that cannot start or continue as asked."""


class TrainingCancelled(Cancelled):
    """The cancel event stopped a run at a step boundary; `checkpoint` resumes it."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(
            f"training stopped at step {step}; checkpoint {checkpoint}",
            "continue with --resume (train(..., resume_from='latest'))",
        )
        self.step = step
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    final: Path
    """The trained model (or LoRA adapter) folder."""
    steps: int
    """Optimiser steps done, those before a resume included."""
    metrics: list[dict[str, Any]]
    """Every metrics record of the run, as in metrics.jsonl."""
    summary: dict[str, Any]
    """Trainer's end-of-training summary (train_runtime, train_loss, ...)."""


Pair = dict[str, Any]


def split_batch(global_batch: int, per_device_max: int, world_size: int = 1) -> tuple[int, int]:
    """(per-device batch, gradient-accumulation steps) that make exactly `global_batch`.

    Each of `world_size` processes takes ``global_batch / world_size`` pairs per optimiser
    step, in as few micro-batches as possible: the per-device batch is the largest
    divisor of that share that fits in `per_device_max`.

    >>> split_batch(32, 4)
    (4, 8)
    >>> split_batch(32, 6, world_size=2)
    (4, 4)
    >>> split_batch(12, 5)
    (4, 3)
    """
    share, remainder = divmod(global_batch, world_size)
    if remainder or share == 0:
        raise TrainError(
            f"a global batch of {global_batch} cannot be split evenly over {world_size} processes",
            "choose a --batch-size that is a multiple of the number of processes",
        )
    per_device = max(d for d in range(1, min(per_device_max, share) + 1) if share % d == 0)
    return per_device, share // per_device


def preference_pairs(data: Any) -> tuple[list[Pair], dict[str, Any]]:
    """(pairs with explicit prompt_/chosen/rejected, a description of the data for run.json).

    `data` is an export folder or its manifest.json (read with the manifest's column
    mapping), a `LoadedDataset`, an Arrow table or a list of dicts with prompt, chosen
    and rejected (the normalised pair format of core.data.pairs).
    """
    if isinstance(data, (str, os.PathLike)):
        return _export_pairs(Path(data))
    if hasattr(data, "pairs") and hasattr(data, "report"):  # a LoadedDataset
        data = data.pairs
    if hasattr(data, "to_pylist"):
        data = data.to_pylist()
    pairs = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in data]
    if not pairs:
        raise TrainError("no pairs to train on")
    return pairs, {"kind": "pairs", "pairs": len(pairs)}


def _export_pairs(path: Path) -> tuple[list[Pair], dict[str, Any]]:
    from core.data.loading import LoadConfig, load_dataset
    from core.export.exporter import read_manifest

    folder = path.parent if path.is_file() else path
    if not folder.exists():
        raise TrainError(f"export not found: {folder}", "pass the folder `dmtui export --out` wrote")
    manifest = read_manifest(path)
    columns = manifest["input"].get("columns") or {}
    as_text = set(manifest["output"].get("json_columns", [])) & {
        columns.get(role, role) for role in ("prompt", "chosen", "rejected")
    }
    if as_text:
        raise TrainError(
            f"{folder}: the export is CSV, which holds the conversations of "
            f"{', '.join(sorted(as_text))} as JSON text; training would read them as plain text",
            "export the selection as jsonl or parquet to train on it (--format jsonl)",
        )
    data_path = folder / manifest["output"].get("data", "")
    if not data_path.exists() or data_path == folder:
        raise TrainError(
            f"{folder}: the manifest names data {manifest['output'].get('data')!r}, which is missing",
            "the export is incomplete; write it again with `dmtui export`",
        )
    loaded = load_dataset(
        str(data_path),
        LoadConfig(
            prompt_col=columns.get("prompt"),
            chosen_col=columns.get("chosen"),
            rejected_col=columns.get("rejected"),
            system_col=columns.get("system"),
            keep_role_text=manifest["input"].get("format") == "standard",
        ),
    )
    expected = manifest.get("counts", {}).get("selected")
    if loaded.report.rejected_total or (expected is not None and loaded.report.loaded != expected):
        reasons = ", ".join(f"{n} {reason}" for reason, n in loaded.report.rejected.items()) or "none rejected"
        raise TrainError(
            f"{data_path}: {loaded.report.loaded} pairs loaded, the manifest records {expected} ({reasons})",
            "the export was changed after it was written; rebuild it with `dmtui export --manifest`",
        )
    pairs, _ = preference_pairs(loaded)
    return pairs, {
        "kind": "export",
        "path": str(folder),
        "pairs": len(pairs),
        "format": loaded.report.format,
        "prompt_style": manifest["input"].get("prompt_style"),
        "output_sha256": manifest["output"].get("sha256"),
    }


def unpaired(pairs: list[Pair]) -> list[dict[str, Any]]:
    """KTO's rows: each pair's chosen as desirable, then its rejected as undesirable.

    Interleaving keeps every batch balanced (KTO samples in order).

    >>> unpaired([{"prompt": "p", "chosen": "a", "rejected": "b"}])
    [{'prompt': 'p', 'completion': 'a', 'label': True}, {'prompt': 'p', 'completion': 'b', 'label': False}]
    """
    rows = []
    for pair in pairs:
        rows.append({"prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        rows.append({"prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
    return rows


def config_from_json(data: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from run.json's ``config`` (tuples come back from JSON as lists)."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TrainError(f"run.json has unknown settings: {', '.join(unknown)}", "it was written by another version")
    values = dict(data)
    if isinstance(values.get("lora_target_modules"), list):
        values["lora_target_modules"] = tuple(values["lora_target_modules"])
    return TrainConfig(**values)


def read_run(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / RUN_JSON
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError as error:
        raise TrainError(f"{path}: no such file", "is this a run folder written by `dmtui train`?") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TrainError(f"{path}: not valid JSON ({error})", "the run record is damaged") from error


def train(
    config: TrainConfig,
    data: Any,
    out_dir: str | Path,
    *,
    metrics_sink: MetricsSink,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train `config.model` on `data` (see `preference_pairs`) into the run folder `out_dir`.

    A folder that already holds a run is refused unless ``config.resume_from`` is set.
    Metrics go to `metrics_sink` and ``metrics.jsonl``; every saved checkpoint to
    `on_checkpoint`. A set `cancel` stops the run at the end of the current optimiser
    step, saves a checkpoint and raises `TrainingCancelled`. `callbacks` are more
    transformers `TrainerCallback`s (core.scoring.seed_policy stops at a plateau with one).
    """
    from core.io.atomic import writing

    config.validate()
    out_dir = Path(out_dir)
    checkpoints = out_dir / CHECKPOINTS
    resume_checkpoint = _resume_checkpoint(config.resume_from, checkpoints)
    if config.resume_from is None and (out_dir / RUN_JSON).exists():
        raise TrainError(f"{out_dir} already holds a training run", "resume it, or choose another folder")
    pairs, data_info = preference_pairs(data)
    with _library_progress_bars_off():
        trainer = _build_trainer(config, pairs, checkpoints)  # before any file: a bad model leaves no run behind
        with writing(out_dir):  # lack of space or permission: a WorkspaceError naming the file
            out_dir.mkdir(parents=True, exist_ok=True)
            if config.resume_from is not None and _is_main_process():
                _remove_unfinished_checkpoints(checkpoints)
            run_record = {
                "config": asdict(config),
                "data": data_info,
                "library_versions": library_versions(_LIBRARIES),
                "started_at": _now(),
                "resumed_from": str(resume_checkpoint) if resume_checkpoint else None,
            }
            _write_json(out_dir / RUN_JSON, run_record)
            history = _metrics_until(out_dir / METRICS_JSONL, _checkpoint_step(resume_checkpoint))
            trainer.accelerator.wait_for_everyone()  # rank 0 has prepared the files the others append to
            reporter = Reporter("train", None, progress, None, unit="steps")
            trainer.add_callback(
                progress_callback(
                    metrics_sink,
                    out_dir / METRICS_JSONL,
                    history,
                    reporter,
                    cancel,
                    on_checkpoint,
                    config.collapse_ratio,
                    config.collapse_window,
                )
            )
            trainer.add_callback(_stop_at_max_steps())
            for callback in callbacks:
                trainer.add_callback(callback)
            try:
                output = trainer.train(resume_from_checkpoint=str(resume_checkpoint) if resume_checkpoint else None)
                metrics = output.metrics
            except _NothingLeftToTrain:  # resumed at the last step: its weights are loaded, nothing to train
                metrics = {}
            step = trainer.state.global_step
            if cancel is not None and cancel.is_set() and step < trainer.state.max_steps:
                checkpoint = checkpoints / f"checkpoint-{step}"
                run_record["outcome"] = {"status": "cancelled", "step": step, "checkpoint": str(checkpoint)}
                _write_json(out_dir / RUN_JSON, run_record)
                raise TrainingCancelled(step, checkpoint if checkpoint.is_dir() else None)
            final = _save_final(trainer, out_dir)
    reporter.finish()
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    run_record["outcome"] = {
        "status": "done",
        "step": step,
        "final": str(final),
        "summary": summary,
        "finished_at": _now(),
    }
    _write_json(out_dir / RUN_JSON, run_record)
    return TrainResult(final, step, history, summary)


def train_seed_policy(
    reference_model_path: str | Path, pairs: Any, out_dir: str | Path, config: TrainConfig, **train_kwargs: Any
) -> Path:
    """pi_1 for implicit margins: DPO of pi_0 on the seed set D0 with pi_0 as reference.

    `config` supplies everything but the models (which are `reference_model_path`) and
    the loss (always DPO, as in the paper); returns the folder of pi_1. Extra keyword
    arguments (metrics_sink, progress, cancel) go to `train`.
    """
    seed_config = replace(config, model=str(reference_model_path), ref_model=None, loss="dpo")
    train_kwargs.setdefault("metrics_sink", lambda record: None)
    return train(seed_config, pairs, out_dir, **train_kwargs).final


def _build_trainer(config: TrainConfig, pairs: list[Pair], checkpoints: Path):
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback

    from core.models.load import load_causal_lm, load_tokenizer

    assert config.model is not None, "train() validated the config: it names a model"
    precision = _precision(config.precision)
    per_device, accumulation = split_batch(
        config.batch_size, config.per_device_batch_size, int(os.environ.get("WORLD_SIZE", "1"))
    )
    common: dict[str, Any] = dict(
        output_dir=str(checkpoints),
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the steps
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        seed=config.seed,
        data_seed=config.seed,
        beta=config.beta,
        max_length=config.max_length,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        deepspeed=config.deepspeed,
        fsdp=config.fsdp or "",
        fsdp_config=config.fsdp_config,
        trust_remote_code=config.trust_remote_code,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    model_dtype = torch.float32  # mixed precision keeps fp32 master weights
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    if pairs and isinstance(pairs[0]["chosen"], list) and not tokenizer.chat_template:
        raise TrainError(
            f"the data is conversational but {config.model}'s tokenizer has no chat template",
            "use a chat model's tokenizer, or export the data in the standard (text) format",
        )
    make_trainer: Callable[..., Trainer]  # KTOTrainer or DPOTrainer, each bound to its own config class
    if config.loss == "kto":
        from trl import KTOConfig, KTOTrainer

        make_trainer = partial(KTOTrainer, args=KTOConfig(**common))
        dataset = Dataset.from_list(unpaired(pairs))
    else:
        from trl import DPOConfig, DPOTrainer

        make_trainer = partial(DPOTrainer, args=DPOConfig(**common, loss_type=[TRL_DPO_LOSS[config.loss]]))
        dataset = Dataset.from_list(pairs)
    # After the config: with DeepSpeed ZeRO-3 the config must exist before models load.
    load: dict[str, Any] = dict(
        device="cpu", dtype=model_dtype, trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle
    )
    frozen = dict(load, dtype=_frozen_dtype(config.frozen_dtype, precision))
    model = load_causal_lm(config.model, **(frozen if config.lora else load))  # LoRA: the base does not train
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        targets = list(config.lora_target_modules)
        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            task_type="CAUSAL_LM",
            target_modules=targets[0] if targets == ["all-linear"] else targets,
        )
    # With LoRA and no other reference, TRL uses the base model (adapter switched off).
    same_reference = config.ref_model in (None, config.model)
    ref_model = (
        None
        if (peft_config is not None and same_reference)
        else load_causal_lm(config.ref_model or config.model, **frozen)
    )
    trainer = make_trainer(
        model=model, ref_model=ref_model, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
    )
    trainer.remove_callback(PrinterCallback)  # it prints logs on stdout, which --jsonl owns
    return trainer


def _precision(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    if not torch.cuda.is_available():
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _frozen_dtype(requested: str, precision: str):
    """The dtype of frozen weights: `requested`, or for auto bf16 when training in bf16, else fp32.

    The trainable weights stay fp32 (mixed precision keeps fp32 master weights); the
    frozen reference and a LoRA base only run forwards, and bf16 halves their memory.
    """
    import torch

    if requested == "auto":
        requested = "bfloat16" if precision == "bf16" else "float32"
    return getattr(torch, requested)


class _NothingLeftToTrain(Exception):
    pass


def _stop_at_max_steps():
    """A callback that stops a run before a step past its last. Resumed from the checkpoint of
    its last step (killed before ``final/`` was saved), transformers would train one step more
    whenever the steps do not divide into whole epochs: it checks for the end only after a step."""
    from transformers import TrainerCallback

    class StopAtMaxSteps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if 0 < state.max_steps <= state.global_step:
                raise _NothingLeftToTrain

    return StopAtMaxSteps()


def _save_final(trainer, out_dir: Path) -> Path:
    """Save the trained model as ``final/``, which appears whole or not at all (it is written
    under another name, then renamed), so a kill mid-save never leaves a model that loads wrong."""
    final, partial, old = out_dir / FINAL, out_dir / f".{FINAL}-partial", out_dir / f".{FINAL}-old"
    if _is_main_process():
        shutil.rmtree(partial, ignore_errors=True)
        if old.exists() and not final.exists():  # killed between the two renames below
            os.replace(old, final)
        shutil.rmtree(old, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(partial))  # save_pretrained, gathering DeepSpeed / FSDP shards first
    trainer.accelerator.wait_for_everyone()
    if _is_main_process():
        trainer.processing_class.save_pretrained(str(partial))
        (partial / "training_args.bin").unlink(missing_ok=True)  # a pickle; run.json holds the config
        if final.exists():
            os.replace(final, old)  # set aside, not deleted, until the new one is in place
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    return final


def _resume_checkpoint(resume_from: str | None, checkpoints: Path) -> Path | None:
    """The checkpoint to continue from: None for a fresh run, and for 'latest' when no
    checkpoint was finished yet (a run killed before its first one starts over)."""
    if resume_from is None:
        return None
    if resume_from != "latest":
        path = Path(resume_from)
        if _saved_step(path) is None:
            raise TrainError(
                f"{path} is not a whole training checkpoint (no readable trainer_state.json)",
                "pass a checkpoint-<step> folder, or 'latest'",
            )
        return path
    finished = [(step, path) for path in _checkpoint_folders(checkpoints) if (step := _saved_step(path)) is not None]
    return max(finished)[1] if finished else None


def _checkpoint_folders(checkpoints: Path) -> list[Path]:
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not checkpoints.is_dir():
        return []
    return [p for p in checkpoints.iterdir() if p.is_dir() and re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-\d+", p.name)]


def _saved_step(checkpoint: Path) -> int | None:
    """A checkpoint's step, or None when its save did not finish: transformers writes
    trainer_state.json last, so a killed save leaves it missing or cut short."""
    try:
        return int(json.loads((checkpoint / "trainer_state.json").read_text("utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_unfinished_checkpoints(checkpoints: Path) -> None:
    """Checkpoints whose save was killed part-way: never resumed from, and in the way of
    transformers, which would count them as the newest and rotate finished ones away."""
    for path in _checkpoint_folders(checkpoints):
        if _saved_step(path) is None:
            shutil.rmtree(path, ignore_errors=True)


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    return None if checkpoint is None else _saved_step(checkpoint)


def _metrics_until(path: Path, step: int | None) -> list[dict[str, Any]]:
    """The records a resumed run keeps: those up to its checkpoint's step, rewritten in place.

    A fresh run starts an empty file; a resume drops records logged after the checkpoint
    (the steps it will redo), so metrics.jsonl never holds a step twice.
    """
    from core.io.atomic import atomic_write_bytes

    kept = []
    if step is not None and path.exists():
        for line in path.read_text("utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the last line of a run killed while appending it
                continue
            if record["step"] <= step:
                kept.append(record)
    if _is_main_process():
        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode("utf-8"))
    return kept


def _is_main_process() -> bool:
    """Rank 0 under accelerate / torchrun (which set RANK), or a plain single process."""
    return os.environ.get("RANK", "0") == "0"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from core.io.atomic import atomic_write_json

    if _is_main_process():
        atomic_write_json(path, data)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _library_progress_bars_off:
    """Silence the tqdm bars of datasets and transformers; progress goes through our callback."""

    def __enter__(self):
        from datasets import utils as datasets_utils
        from transformers.utils import logging as transformers_logging

        self._datasets_were_on = not datasets_utils.are_progress_bars_disabled()
        self._transformers_were_on = transformers_logging.is_progress_bar_enabled()
        datasets_utils.disable_progress_bars()
        transformers_logging.disable_progress_bar()

    def __exit__(self, *exc):
        from datasets import utils as datasets_utils
        from transformers.utils import logging as transformers_logging

        if self._datasets_were_on:
            datasets_utils.enable_progress_bars()
        if self._transformers_were_on:
            transformers_logging.enable_progress_bar()
