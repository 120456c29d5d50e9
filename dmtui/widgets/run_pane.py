"""Export the current selection, then train on it: the last steps of a curation.

Export goes through the same engine and manifest as `dmtui export` (the curation pane
runs it in a worker when this pane posts `ExportRequested`). Above the buttons the pane
says what Export will write (mode, fused sources, budget, pairs, M1/M2, trim, flagged
pairs and which flags are dropped), or why Export and Train refuse: a control of the
Curate tab that is invalid or cannot apply. Training runs `dmtui train
EXPORT --jsonl` as a subprocess, so it can be cancelled for real (SIGTERM: the run stops
at a step boundary with a checkpoint), an out-of-memory crash cannot take the app down,
and GPU memory is freed when it ends. Its JSON lines drive the curves and the log.

The training options start empty, so `dmtui train`'s defaults (the paper's) apply; the
demo world (`--demo-models`) pre-fills `DEMO_TRAIN_ARGS`, values its tiny models learn
with. The field is split like a shell line (quotes group words).
"""

from __future__ import annotations

import json
import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, RichLog, Static

from core.curation.session import DEFAULT_DROP_FLAGGED, ExportPlan
from core.export.exporter import MANIFEST_NAME
from core.store.annotations import FLAGS, SWAP_ANSWERS
from core.training.runs import CURVES
from dmtui.widgets.state_checkbox import StateCheckbox
from dmtui.widgets.static_text import update_text
from dmtui.widgets.training_curves import TrainingCurves, number
from dmtui.workers import JsonlProcess, dmtui_command

DEMO_TRAIN_ARGS = "--epochs 1 --lr 1e-4 --max-steps 40"
"""Training options for the demo world's tiny models (the paper's 5e-7 barely moves them)."""


def latest_export(exports: Path) -> Path | None:
    """The newest finished export under a workspace's exports/ (its manifest is written last)."""
    manifests = [(path.stat().st_mtime, path.parent) for path in exports.glob(f"*/{MANIFEST_NAME}")
                 if not path.parent.name.startswith(".")]
    return max(manifests)[1] if manifests else None


@dataclass(frozen=True)
class TrainingPlan:
    """What T is about to start, shown in its confirmation."""

    command: list[str]
    model: str
    loss: str
    lr: float
    steps: str
    export: str

    def describe(self) -> str:
        return (f"model   {self.model}\nloss    {self.loss}\nlr      {self.lr:g}\nsteps   {self.steps}\n"
                f"data    {self.export}")


@dataclass
class ExportRequested(Message):
    """Write the curation pane's current selection to `out`."""

    out: str
    include_scores: bool


@dataclass
class DropFlaggedChanged(Message):
    """The flags whose pairs an export leaves out."""

    flags: tuple[str, ...]


class RunPane(Vertical):
    def __init__(self, workspace_root: Path, default_model: str = "", model_flags: list[str] | None = None, *,
                 default_args: str = "", id: str | None = None) -> None:
        super().__init__(id=id)
        self.workspace_root = workspace_root
        self.default_model = default_model
        self.default_args = default_args
        self.model_flags = list(model_flags or [])
        """--trust-remote-code / --allow-pickle when `dmtui open` was given them."""
        self.job: JsonlProcess | None = None
        self.history: dict[str, tuple[list[float], list[float]]] = {key: ([], []) for key, _ in CURVES}
        self.last_export: str | None = None
        self.selection_problem: str | None = "the Curate tab has no selection yet"
        """Why Export and Train refuse now (a Curate control at fault); None when they may run."""
        self._plan: tuple[ExportPlan | None, str | None, tuple[str, ...]] | None = None
        """The latest `show_plan`, drawn when the pane is mounted (its tab may open later)."""
        self._unwritten: list[str] = []
        """Log lines told before the log existed, written when it does."""

    def compose(self) -> ComposeResult:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with Horizontal(classes="run-row"):
            yield Label("export to", classes="run-name")
            yield Input(str(self.workspace_root / "exports" / f"selection-{stamp}"), id="export-out", compact=True)
            yield StateCheckbox("scores", value=True, id="export-scores", compact=True)
            yield Button("Export", id="export", compact=True, variant="primary")
        with Horizontal(classes="run-row"):
            yield Label("drop", classes="run-name")
            for flag in FLAGS:
                yield StateCheckbox(f"{flag}-flagged", value=flag in DEFAULT_DROP_FLAGGED, id=f"drop-{flag}", compact=True,
                               tooltip=f"leave pairs flagged {flag} out of the export (default: "
                               f"{', '.join(DEFAULT_DROP_FLAGGED)})"
                               + ("; a swapped one is kept: the swap fixed it" if flag in SWAP_ANSWERS else ""))
        yield Static("Export will write: waiting for the Curate tab's selection", id="export-plan")
        with Horizontal(classes="run-row"):
            yield Label("train", classes="run-name")
            yield Input(self.default_model, placeholder="policy model: folder or hub id", id="train-model",
                        compact=True, select_on_focus=False)
            yield Button("Train (T)", id="train", compact=True, variant="success")
            yield Button("Stop (X)", id="stop", compact=True, variant="error", disabled=True)
        with Horizontal(classes="run-row"):
            yield Label("options", classes="run-name")
            yield Input(self.default_args, placeholder="more `dmtui train` options (default: the paper's)",
                        id="train-args", compact=True, select_on_focus=False,
                        tooltip="extra `dmtui train` options, split like a shell line")
        yield TrainingCurves(id="curves")
        yield RichLog(id="run-log", max_lines=2000, wrap=True, markup=True)

    def on_mount(self) -> None:
        """T trains on the latest export, also one written before the app started (or by `dmtui export`)."""
        for line in self._unwritten:
            self.log_line(line)
        self._unwritten.clear()
        found = latest_export(self.workspace_root / "exports")
        if found is not None:
            self.last_export = str(found)
            self.log_line(f"latest export: {escape(str(found))} (T trains on it; E writes a new one)")
        if self._plan is not None:
            self._draw_plan(*self._plan)

    # Export --------------------------------------------------------------------
    @on(Button.Pressed, "#export")
    def _export(self) -> None:
        if self.selection_problem:
            self.export_refused(self.selection_problem)
            return
        out = self.query_one("#export-out", Input).value.strip()
        if not out:
            self.notify("Give a folder to export to", severity="warning")
            return
        self.post_message(ExportRequested(out, self.query_one("#export-scores", Checkbox).value))

    @on(Checkbox.Changed, "#drop-toxic, #drop-mislabeled, #drop-other")
    def _drop_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        flags = tuple(flag for flag in FLAGS if self.query_one(f"#drop-{flag}", Checkbox).value)
        self.post_message(DropFlaggedChanged(flags))

    def show_plan(self, plan: ExportPlan | None, problem: str | None, drop_flagged: tuple[str, ...]) -> None:
        """What Export will write, or why it refuses; the drop choices as the Curate tab holds them
        (drawn once the pane is mounted)."""
        self.selection_problem = problem
        self._plan = (plan, problem, drop_flagged)
        if self.is_mounted:
            self._draw_plan(plan, problem, drop_flagged)

    def _draw_plan(self, plan: ExportPlan | None, problem: str | None, drop_flagged: tuple[str, ...]) -> None:
        for flag in FLAGS:
            box = self.query_one(f"#drop-{flag}", Checkbox)
            if box.value != (flag in drop_flagged):
                with box.prevent(Checkbox.Changed):
                    box.value = flag in drop_flagged
        view = self.query_one("#export-plan", Static)
        view.set_class(problem is not None, "refused")
        if problem is not None:
            update_text(view, f"[b]Export and Train refuse:[/b] {escape(problem)}")
        elif plan is not None:
            update_text(view, "[b]Export will write:[/b] " + escape("\n".join(plan.lines())))

    def export_refused(self, reason: str) -> None:
        self.log_line(f"[red]export refused:[/] {escape(reason)}")
        self.notify(f"Export refused: {reason}", severity="error", markup=False)

    def export_finished(self, out: str, manifest: dict) -> None:
        self.last_export = out
        counts = manifest["counts"]
        dropped = counts.get("dropped_flagged", 0)
        self.log_line(f"[green]exported[/] {counts['selected']:,} of {counts['total']:,} pairs to {escape(out)} "
                      f"(sha256 {manifest['output']['sha256'][:12]})"
                      + (f"; dropped {dropped:,} flagged pairs" if dropped else ""))
        if self.is_mounted:  # else the field is composed with a fresh name
            self.query_one("#export-out", Input).value = str(Path(out).with_name(f"selection-{time.strftime('%Y%m%d-%H%M%S')}"))

    # Training ------------------------------------------------------------------
    def plan_training(self) -> TrainingPlan:
        """The run T would start, from the latest export and the fields; ValueError says what is missing."""
        from dmtui.headless.train import parse_train_config

        if self.selection_problem:
            raise ValueError(f"refused: {self.selection_problem}")
        if self.last_export is None:
            raise ValueError("export a selection first (E); training reads the latest export")
        model = self.query_one("#train-model", Input).value.strip()
        if not model:
            raise ValueError("give the policy model to train (a folder or a hub id)")
        text = self.query_one("#train-args", Input).value
        try:
            extra = shlex.split(text)
            config = parse_train_config(["--model", model, *extra])
        except ValueError as error:
            raise ValueError(f"training options {text.strip()!r}: {error}") from None
        run = self.workspace_root / "runs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
        command = dmtui_command("train", self.last_export, "--out", str(run), "--jsonl", *self.model_flags,
                                "--model", model, *extra)
        return TrainingPlan(command, config.model or model, config.loss, config.lr,
                            self._steps(config), self.last_export)

    def _steps(self, config) -> str:
        """Optimiser steps: --max-steps, or about epochs x ceil(pairs / batch) from the export's count."""
        if config.max_steps:
            return f"{config.max_steps:,} (--max-steps)"
        try:
            manifest = json.loads((Path(self.last_export) / "manifest.json").read_text("utf-8"))
            pairs = int(manifest["counts"]["selected"])
        except (OSError, ValueError, KeyError, TypeError):
            return f"{config.epochs:g} epochs"
        examples = pairs * 2 if config.loss == "kto" else pairs
        steps = math.ceil(math.ceil(examples / config.batch_size) * config.epochs)
        return f"about {steps:,} ({config.epochs:g} epochs of {pairs:,} pairs, batch {config.batch_size})"

    def ready_plan(self) -> TrainingPlan | None:
        """The run Train and T would start now, or None after saying why none can."""
        if self.running:
            self.notify("Training is already running (X stops it)", severity="warning")
            return None
        try:
            return self.plan_training()
        except ValueError as error:
            self.notify(f"Train: {error}", severity="warning", markup=False)
            return None

    @on(Button.Pressed, "#train")
    def _train(self) -> None:
        """The Train button starts at once (it is pressed on purpose); T asks first."""
        if (plan := self.ready_plan()) is not None:
            self.start_training(plan)

    def start_training(self, plan: TrainingPlan) -> None:
        if self.running:
            self.notify("Training is already running", severity="warning")
            return
        self.run_training(plan.command)

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    @work(exclusive=True, group="train", exit_on_error=False)
    async def run_training(self, command: list[str]) -> None:
        self.history = {key: ([], []) for key, _ in CURVES}
        self.query_one(TrainingCurves).show({})
        self._set_running(True)
        self.log_line(f"[b]$[/b] dmtui {escape(shlex.join(command[3:]))}")
        self.job = JsonlProcess(command)
        try:
            async for event in self.job.events():
                self.handle_event(event)
        finally:
            self._set_running(False)
        code = self.job.returncode
        if code not in (0, 130) and self.job.stderr_tail:
            self.log_line(f"[red]{escape(self.job.stderr_tail)}[/]")
        self.log_line(f"training exited with code {code}")

    def handle_event(self, event: dict) -> None:
        """One event of `dmtui train --jsonl`, drawn on the curves and written to the log in words."""
        kind = event.get("event")
        if kind == "log":
            step = event.get("step")
            for key, _ in CURVES:
                value = event.get(key)
                if isinstance(value, (int, float)) and isinstance(step, (int, float)):
                    steps, values = self.history[key]
                    steps.append(float(step))
                    values.append(float(value))
            self.query_one(TrainingCurves).show({"this run": self.history})
            shown = "  ".join(f"{title} {number(event[key])}" for key, title in CURVES
                              if isinstance(event.get(key), (int, float)))
            self.log_line(f"step {step}/{event.get('total_steps')}  {shown}"
                          + (f"\n  [yellow]warning: {escape(str(event['warning']))}[/]" if event.get("warning") else ""))
        elif kind == "start":
            config = event.get("config") or {}
            self.log_line(f"started {'(resumed) ' if event.get('resumed') else ''}run {escape(str(event.get('run')))} "
                          f"on {escape(str(event.get('export')))}: model {escape(str(config.get('model')))}, "
                          f"loss {config.get('loss')}, lr {config.get('lr')}, {config.get('epochs')} epochs")
        elif kind == "checkpoint":
            self.log_line(f"checkpoint saved at step {event.get('step')}: {escape(str(event.get('path')))}")
        elif kind == "error":
            self.log_line(f"[red]error:[/] {escape(str(event.get('message')))}"
                          + (f"\n  hint: {escape(str(event['hint']))}" if event.get("hint") else ""))
        elif kind == "done":
            self.log_line(f"[green]finished[/] after {event.get('steps')} steps: model in "
                          f"{escape(str(event.get('final')))}")
        elif kind == "cancelled":
            self.log_line(f"[yellow]stopped[/] at step {event.get('step')}; checkpoint "
                          f"{escape(str(event.get('checkpoint')))} (continue with dmtui train --resume)")
        else:
            self.log_line(escape(str(event.get("text", json.dumps(event)))))

    def stop_training(self) -> None:
        """SIGTERM: the run stops at the next step boundary and keeps a checkpoint."""
        if self.running:
            self.job.stop()
            self.log_line("stopping at the next step boundary (a checkpoint is kept)…")

    async def wait(self) -> None:
        if self.job is not None:
            await self.job.wait()

    @on(Button.Pressed, "#stop")
    def _stop(self) -> None:
        self.screen.run_action("stop_work")

    def _set_running(self, running: bool) -> None:
        self.query_one("#train", Button).disabled = running
        self.query_one("#stop", Button).disabled = not running
        if self.screen.focused is not None and self.screen.focused.disabled:
            self.screen.set_focus(None)  # not onto the next field, where a key would type

    def log_line(self, text: str) -> None:
        """Write to the run log; a line told before the pane is mounted (an export made from
        the Curate tab before the Run tab was shown) is written when it is."""
        logs = self.query("#run-log")
        if logs:
            logs.first(RichLog).write(text)
        else:
            self._unwritten.append(text)
