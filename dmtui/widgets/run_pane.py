"""Export the current selection, then train on it: the last steps of a curation.

Export goes through the same engine and manifest as `dmtui export` (the curation pane
runs it in a worker when this pane posts `ExportRequested`). Above the buttons the pane
says what Export will write (mode, fused sources, budget, pairs, M1/M2, trim, flagged
pairs and which flags are dropped), or why Export and Train refuse: a control of the
Curate tab that is invalid or cannot apply. Training runs `dmtui train
EXPORT --jsonl` as a subprocess, so it can be cancelled for real (SIGTERM: the run stops
at a step boundary with a checkpoint), an out-of-memory crash cannot take the app down,
and GPU memory is freed when it ends. Its JSON lines drive the curves and the log.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, RichLog, Sparkline, Static

from core.annotations import FLAGS
from core.curation import DEFAULT_DROP_FLAGGED, ExportPlan

CURVES = (("loss", "loss"), ("reward_margin", "reward margin"), ("reward_accuracy", "reward accuracy"))


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
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.workspace_root = workspace_root
        self.default_model = default_model
        self.model_flags = list(model_flags or [])
        """--trust-remote-code / --allow-pickle when `dmtui open` was given them."""
        self.process: asyncio.subprocess.Process | None = None
        self.history: dict[str, list[float]] = {key: [] for key, _ in CURVES}
        self.last_export: str | None = None
        self.selection_problem: str | None = "the Curate tab has no selection yet"
        """Why Export and Train refuse now (a Curate control at fault); None when they may run."""

    def compose(self) -> ComposeResult:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with Horizontal(classes="run-row"):
            yield Label("export to", classes="run-name")
            yield Input(str(self.workspace_root / "exports" / f"selection-{stamp}"), id="export-out", compact=True)
            yield Checkbox("scores", value=True, id="export-scores", compact=True)
            yield Button("Export", id="export", compact=True, variant="primary")
        with Horizontal(classes="run-row"):
            yield Label("drop", classes="run-name")
            for flag in FLAGS:
                yield Checkbox(f"{flag}-flagged", value=flag in DEFAULT_DROP_FLAGGED, id=f"drop-{flag}", compact=True,
                               tooltip=f"leave pairs flagged {flag} out of the export (default: "
                               f"{', '.join(DEFAULT_DROP_FLAGGED)})")
        yield Static("Export will write: waiting for the Curate tab's selection", id="export-plan")
        with Horizontal(classes="run-row"):
            yield Label("train", classes="run-name")
            yield Input(self.default_model, placeholder="policy model: folder or hub id", id="train-model",
                        compact=True)
            yield Input("--epochs 1 --lr 1e-4 --max-steps 40", id="train-args", compact=True,
                        tooltip="extra `dmtui train` options")
            yield Button("Train", id="train", compact=True, variant="success")
            yield Button("Stop", id="stop", compact=True, variant="error", disabled=True)
        with Horizontal(id="curves"):
            for key, title in CURVES:
                with Vertical(classes="curve"):
                    yield Label(title, id=f"title-{key}")
                    yield Sparkline([], id=f"curve-{key}")
        yield RichLog(id="run-log", max_lines=2000, wrap=True, markup=True)

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
        """What Export will write, or why it refuses; the drop choices as the Curate tab holds them."""
        self.selection_problem = problem
        for flag in FLAGS:
            box = self.query_one(f"#drop-{flag}", Checkbox)
            if box.value != (flag in drop_flagged):
                with box.prevent(Checkbox.Changed):
                    box.value = flag in drop_flagged
        view = self.query_one("#export-plan", Static)
        view.set_class(problem is not None, "refused")
        if problem is not None:
            view.update(f"[b]Export and Train refuse:[/b] {escape(problem)}")
        elif plan is not None:
            view.update("[b]Export will write:[/b] " + escape("\n".join(plan.lines())))

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
        self.query_one("#export-out", Input).value = str(Path(out).with_name(f"selection-{time.strftime('%Y%m%d-%H%M%S')}"))

    # Training ------------------------------------------------------------------
    @on(Button.Pressed, "#train")
    def _train(self) -> None:
        if self.selection_problem:
            self.notify(f"Train refused: {self.selection_problem}", severity="error", markup=False)
            return
        if self.last_export is None:
            self.notify("Export a selection first; training reads the export", severity="warning")
            return
        model = self.query_one("#train-model", Input).value.strip()
        if not model:
            self.notify("Give the policy model to train (a folder or a hub id)", severity="warning")
            return
        run = self.workspace_root / "runs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
        extra = self.query_one("#train-args", Input).value.split()
        command = [sys.executable, "-m", "dmtui", "train", self.last_export, "--out", str(run),
                   "--model", model, "--jsonl", *self.model_flags, *extra]
        self.run_training(command)

    @work(exclusive=True, group="train", exit_on_error=False)
    async def run_training(self, command: list[str]) -> None:
        for key in self.history:
            self.history[key].clear()
        self._set_running(True)
        self.log_line(f"[b]$[/b] {escape(' '.join(command[2:]))}")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            stderr_task = asyncio.create_task(self.process.stderr.read())
            async for line in self.process.stdout:
                self.handle_event(line.decode("utf-8", errors="replace").strip())
            code = await self.process.wait()
            stderr = (await stderr_task).decode("utf-8", errors="replace").strip()
            if code not in (0, 130) and stderr:
                self.log_line(f"[red]{escape(stderr.splitlines()[-1])}[/]")
            self.log_line(f"training exited with code {code}")
        finally:
            self.process = None
            self._set_running(False)

    def handle_event(self, line: str) -> None:
        """One JSON line of `dmtui train --jsonl`."""
        if not line:
            return
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            self.log_line(escape(line))
            return
        kind = event.get("event")
        if kind == "log":
            for key, title in CURVES:
                value = event.get(key)
                if isinstance(value, (int, float)):
                    self.history[key].append(float(value))
                    self.query_one(f"#curve-{key}", Sparkline).data = list(self.history[key])
                    self.query_one(f"#title-{key}", Label).update(f"{title} {value:.3f}")
            step = f"step {event.get('step')}/{event.get('total_steps')}"
            self.log_line(f"{step} loss {event.get('loss')} margin {event.get('reward_margin')}"
                          + (f" [yellow]{escape(str(event['warning']))}[/]" if event.get("warning") else ""))
        elif kind == "error":
            self.log_line(f"[red]error:[/] {escape(str(event.get('message')))}"
                          + (f"\n  hint: {escape(str(event['hint']))}" if event.get("hint") else ""))
        elif kind == "done":
            self.log_line(f"[green]done[/]: final model in {escape(str(event.get('final')))}")
        else:
            self.log_line(escape(json.dumps(event)))

    def action_stop_training(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            self.log_line("stopping at the next step boundary (a checkpoint is kept)…")

    @on(Button.Pressed, "#stop")
    def _stop(self) -> None:
        self.action_stop_training()

    def _set_running(self, running: bool) -> None:
        self.query_one("#train", Button).disabled = running
        self.query_one("#stop", Button).disabled = not running

    def log_line(self, text: str) -> None:
        self.query_one("#run-log", RichLog).write(text)
