"""What a training run reports while it runs: stable metric names, the collapse warning,
and the `TrainerCallback` that forwards TRL's logs and honours a cancel event.

A metrics record (one per logging step, to the sink and to ``metrics.jsonl``)::

    {"step": 10, "total_steps": 120, "epoch": 0.17, "loss": 0.62, "reward_margin": 0.41,
     "reward_accuracy": 0.72, "reward_chosen": 0.15, "reward_rejected": -0.26,
     "logp_chosen": -85.3, "logp_rejected": -97.1, "learning_rate": 4.1e-07,
     "grad_norm": 3.2, "trl": {...TRL's own keys, as logged...}}

Every key of `STABLE_KEYS` is always present (None when the loss does not report it:
KTO has no reward accuracy); ``warning`` is added only when `collapse_warning` fires.
TRL's names change between versions, ours do not; its raw log stays under ``trl``.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.progress import Reporter

MetricsSink = Callable[[dict[str, Any]], None]

# Our stable name -> TRL's (DPOTrainer and KTOTrainer log the same names).
TRL_NAMES = {
    "loss": "loss",
    "reward_margin": "rewards/margins",
    "reward_accuracy": "rewards/accuracies",
    "reward_chosen": "rewards/chosen",
    "reward_rejected": "rewards/rejected",
    "logp_chosen": "logps/chosen",
    "logp_rejected": "logps/rejected",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
}
STABLE_KEYS = ("step", "total_steps", "epoch", *TRL_NAMES)


def stable_metrics(logs: dict[str, Any], step: int, total_steps: int, epoch: float | None) -> dict[str, Any]:
    """TRL's log of one step under our names, with TRL's raw keys kept under ``trl``.

    >>> record = stable_metrics({"loss": 0.7, "rewards/margins": 0.1}, 3, 10, 0.5)
    >>> record["reward_margin"], record["reward_accuracy"], record["trl"]["rewards/margins"]
    (0.1, None, 0.1)
    """
    record: dict[str, Any] = {"step": step, "total_steps": total_steps, "epoch": epoch}
    for ours, theirs in TRL_NAMES.items():
        record[ours] = _number(logs.get(theirs))
    record["trl"] = {key: _number(value) if isinstance(value, float) else value for key, value in logs.items()}
    return record


def _number(value: Any) -> Any:
    """JSON has no NaN or infinity: those become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def collapse_warning(history: list[dict[str, Any]], ratio: float, window: int) -> str | None:
    """The small-beta failure in docs/method.md ("Step 3: training"): chosen and rejected log-probs both collapse.

    DPO may push the rejected log-prob down as far as it likes, but when the chosen one
    falls with it the model is leaving the data altogether (beta 0.01 for 2 epochs gave
    repeated tokens in the paper). Rule: with ``start`` the first logged value and
    ``recent`` the median of the last `window` logged values, warn when for *both*
    chosen and rejected ``recent < start - ratio * |start|`` (the summed log-prob has
    fallen by more than `ratio` of its starting size, e.g. from -100 to below -150 with
    ratio 0.5). The median over `window` logs keeps one unusual batch (long responses
    have low summed log-probs) from firing it; a real collapse is sustained.

    >>> logs = [{"logp_chosen": -100.0 - 30 * i, "logp_rejected": -110.0 - 40 * i} for i in range(5)]
    >>> collapse_warning(logs, ratio=0.5, window=3) is not None
    True
    >>> collapse_warning(logs[:2], ratio=0.5, window=3) is None  # too early to tell
    True
    """
    series = {
        side: [r[f"logp_{side}"] for r in history if r.get(f"logp_{side}") is not None]
        for side in ("chosen", "rejected")
    }
    if any(len(values) <= window for values in series.values()):
        return None
    moves = {}
    for side, values in series.items():
        start, recent = values[0], statistics.median(values[-window:])
        if recent >= start - ratio * abs(start):
            return None
        moves[side] = (start, recent)
    (c0, c1), (r0, r1) = moves["chosen"], moves["rejected"]
    return (
        f"chosen and rejected log-probs both collapsed (chosen {c0:.1f} -> {c1:.1f}, rejected {r0:.1f} -> {r1:.1f}): "
        "the small-beta failure; try a larger beta, a smaller learning rate, or 1 epoch"
    )


def progress_callback(
    metrics_sink: MetricsSink,
    metrics_path: Path,
    history: list[dict[str, Any]],
    reporter: Reporter,
    cancel: threading.Event | None,
    on_checkpoint: Callable[[Path], None] | None,
    collapse_ratio: float,
    collapse_window: int,
):
    """A `TrainerCallback`: logs to the sink and ``metrics.jsonl``, steps to `reporter`,
    checkpoints to `on_checkpoint`, and a set `cancel` event to a clean stop.

    On cancel it asks the Trainer to stop *and save* at the end of the current
    optimiser step, so the run can resume from exactly there. `history` holds the
    records so far (those before a resume included), for the collapse rule.
    """
    import json

    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    def stop_if_cancelled(control):
        if cancel is not None and cancel.is_set():
            control.should_training_stop = True
            control.should_save = True
        return control

    class ProgressCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            reporter.total = state.max_steps
            reporter.done = state.global_step - 1
            reporter.advance(message=_progress_message(history))
            if cancel is not None and cancel.is_set():
                control.should_log = True  # the last step's metrics, before stopping
            return stop_if_cancelled(control)

        def on_log(self, args, state, control, logs=None, **kwargs):
            # Checked here too: a cancel set while this step was logged still stops at this step.
            if not state.is_world_process_zero or not logs or "train_runtime" in logs:
                return stop_if_cancelled(control)  # the end-of-training summary is returned, not logged
            record = stable_metrics(dict(logs), state.global_step, state.max_steps, state.epoch)
            history.append(record)
            warning = collapse_warning(history, collapse_ratio, collapse_window)
            if warning:
                record["warning"] = warning
            with metrics_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
            metrics_sink(record)
            return stop_if_cancelled(control)

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero and on_checkpoint is not None:
                on_checkpoint(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")

    return ProgressCallback()


def _progress_message(history: list[dict[str, Any]]) -> str:
    if not history:
        return ""
    last = history[-1]
    parts = [
        f"{name} {last[name]:.3f}"
        for name in ("loss", "reward_margin", "reward_accuracy")
        if last.get(name) is not None
    ]
    return ", ".join(parts)
