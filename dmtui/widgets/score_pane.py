"""Score the dataset from the app: pick the models and sources, watch per-source progress.

The pane collects settings and runs `dmtui score WORKSPACE --jsonl` as a child process
(see `dmtui.workers.JsonlProcess`): a model that crashes or runs out of memory cannot
take the app down, stopping it (SIGTERM) keeps every finished chunk, and the models'
memory, GPU memory included, is freed when scoring ends. Its JSON lines drive one
progress bar per margin source. When it ends the pane posts `ScoringEnded`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, ProgressBar

from core.defaults import DEFAULT_BATCH_TOKENS
from core.scoring.seed_report import describe
from core.selection.selector import MARGIN_SOURCES
from dmtui.widgets.state_checkbox import StateCheckbox
from dmtui.workers import JsonlProcess, dmtui_command

SOURCES = MARGIN_SOURCES


@dataclass
class ScoringEnded(Message):
    """`dmtui score` exited: `ok` when it finished, `summary` says what it did or why not."""

    ok: bool
    summary: str


def clock(seconds: float) -> str:
    """12:05, or 1:02:05 past an hour."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ScorePane(Vertical):
    def __init__(self, workspace_root: Path, defaults: dict[str, str], model_flags: list[str] | None = None, *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.workspace_root = workspace_root
        self.defaults = defaults
        self.model_flags = list(model_flags or [])
        """--trust-remote-code / --allow-pickle when `dmtui open` was given them."""
        self.job: JsonlProcess | None = None
        self.n_pairs: int | None = None
        self.started = 0.0

    def compose(self) -> ComposeResult:
        fields = (
            ("reward_model", "reward model", "external margin: a sequence-classification model, folder or hub id"),
            ("reference_model", "pi_0 (SFT)", "the SFT model: implicit margin reference and IFD"),
            ("policy_model", "pi_1", "optional: pi_0 after DPO (or a LoRA adapter); empty = seed DPO on D0"),
        )
        for key, label, placeholder in fields:
            with Horizontal(classes="score-row"):
                yield Label(label, classes="score-name")
                yield Input(self.defaults.get(key, ""), placeholder=placeholder, id=f"score-{key}", compact=True,
                            select_on_focus=False)
        with Horizontal(classes="score-row"):
            yield Label("sources", classes="score-name")
            for source in SOURCES:
                yield StateCheckbox(source, value=source != "ifd", id=f"score-source-{source}", compact=True)
        with Horizontal(classes="score-row"):
            yield Label("device", classes="score-name")
            yield Input(self.defaults.get("device", ""), placeholder="auto", id="score-device", compact=True,
                        select_on_focus=False)
            yield Label("batch tokens", classes="score-name")
            yield Input("", placeholder=f"{DEFAULT_BATCH_TOKENS}", id="score-batch-tokens", compact=True,
                        select_on_focus=False)
            yield Label("max length", classes="score-name")
            yield Input("", placeholder="default", id="score-max-length", compact=True, select_on_focus=False)
        with Horizontal(classes="score-row"):
            yield Label("seed DPO D0", classes="score-name")
            yield Label("pairs", classes="score-short")
            yield Input(self.defaults.get("seed_pairs", ""), placeholder="auto", id="score-seed-pairs", compact=True,
                        select_on_focus=False)
            yield Label("", id="score-seed-effective", classes="score-effective")
            yield Label("lr", classes="score-short")
            yield Input(self.defaults.get("seed_lr", ""), placeholder="5e-7", id="score-seed-lr", compact=True,
                        select_on_focus=False)
        with Horizontal(classes="score-row"):
            yield Label("", classes="score-name")
            yield Button("Score (S)", id="score-start", compact=True, variant="primary")
        yield Label("", id="score-status")
        for source in SOURCES:
            with Horizontal(classes="score-progress", id=f"progress-row-{source}"):
                yield Label(source, classes="score-name")
                yield ProgressBar(id=f"progress-{source}", show_eta=False)
                yield Label("", id=f"rate-{source}", classes="score-rate")

    def on_mount(self) -> None:
        for source in SOURCES:
            self.query_one(f"#progress-row-{source}").display = False
        self._show_seed_set()  # the dataset's size may have come before the pane was mounted

    # Settings ------------------------------------------------------------------
    def set_pair_count(self, n_pairs: int) -> None:
        """The dataset's size is known: show the seed set the settings amount to (once mounted)."""
        self.n_pairs = n_pairs
        if self.is_mounted:
            self._show_seed_set()

    @on(Input.Changed, "#score-seed-pairs")
    def _show_seed_set(self) -> None:
        if self.n_pairs is not None:
            self._compute_seed_set(self.n_pairs, self.query_one("#score-seed-pairs", Input).value.strip())

    @work(thread=True, exclusive=True, group="seed-set")
    def _compute_seed_set(self, n_pairs: int, text: str) -> None:
        """The effective |D0| as scoring will draw it ("auto: 2 × 600 (all)"); the engine imports off the UI thread."""
        from core.scoring.config import ScoringConfig
        from core.scoring.seed_policy import seed_set_summary

        if text and not text.isdigit():
            shown = "not a whole number"
        else:
            config = ScoringConfig(seed_pairs=int(text)) if text else ScoringConfig()
            shown = f"{'' if text else 'auto: '}{seed_set_summary(n_pairs, config)}"
        self.app.call_from_thread(self.query_one("#score-seed-effective", Label).update, shown)

    def command(self) -> list[str]:
        """The `dmtui score` command the settings describe; raises ValueError naming a bad field."""
        sources = [s for s in SOURCES if self.query_one(f"#score-source-{s}", StateCheckbox).value]
        if not sources:
            raise ValueError("pick at least one margin source")
        arguments = [str(self.workspace_root), "--jsonl", "--sources", ",".join(sources), *self.model_flags]
        options = (("reward_model", "--reward-model", str), ("reference_model", "--reference-model", str),
                   ("policy_model", "--policy-model", str), ("device", "--device", str),
                   ("batch-tokens", "--batch-tokens", int), ("max-length", "--max-length", int),
                   ("seed-pairs", "--seed-pairs", int), ("seed-lr", "--seed-lr", float))
        for key, option, kind in options:
            text = self.query_one(f"#score-{key}", Input).value.strip()
            if not text:
                continue
            try:
                kind(text)
            except ValueError:
                raise ValueError(f"{option.lstrip('-').replace('-', ' ')} {text!r} is not "
                                 + ("a whole number" if kind is int else "a number")) from None
            arguments += [option, text]
        if self.defaults.get("demo"):  # the demo's seed DPO settings (core.demo.models.DEMO_SCORING) fill the rest
            arguments.append("--demo")
        return dmtui_command("score", *arguments)

    # Running ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def start(self) -> bool:
        """Start scoring with the pane's settings (the S key and the Score button); False if it cannot."""
        if self.running:
            self.notify("Scoring is already running", severity="warning")
            return False
        try:
            command = self.command()
        except ValueError as error:
            self.notify(f"Score: {error}", severity="error", markup=False)
            return False
        self.run_scoring(command)
        return True

    @on(Button.Pressed, "#score-start")
    def _start_pressed(self) -> None:
        if self.start():
            self.screen.set_focus(None)  # the global keys keep working while it runs

    def stop(self) -> None:
        """Cancel at the next chunk: every finished chunk is kept and the next run resumes."""
        if self.running:
            self.job.stop()
            self.query_one("#score-status", Label).update("stopping at the next chunk (finished chunks are kept)…")

    async def wait(self) -> None:
        if self.job is not None:
            await self.job.wait()

    @work(exclusive=True, group="score", exit_on_error=False)
    async def run_scoring(self, command: list[str]) -> None:
        self.job = JsonlProcess(command)
        self.started = time.monotonic()
        self._set_running(True)
        for source in SOURCES:
            self.query_one(f"#progress-row-{source}").display = False
        outcome: dict = {}
        try:
            async for event in self.job.events():
                if event.get("event") == "progress":
                    self.show_progress(event)
                elif event.get("event") in ("done", "cancelled", "error"):
                    outcome = event
        finally:
            self._set_running(False)
        ok, summary = self._summary(outcome, self.job)
        self.query_one("#score-status", Label).update(Text(summary))  # may quote paths: not markup
        self.post_message(ScoringEnded(ok, summary))

    def _summary(self, outcome: dict, job: JsonlProcess) -> tuple[bool, str]:
        elapsed = clock(time.monotonic() - self.started)
        parts = "; ".join(f"{name}: {r['scored']:,} scored, {r['reused']:,} reused"
                          + (f", {r['token_identical']:,} token-identical" if r.get("token_identical") else "")
                          + f", {r['truncation_summary']}"  # pairs cut to fit the source's token limit
                          for name, r in outcome.get("sources", {}).items())
        # What the run warned about (a moved boundary, pi_1's other chat template, an unbatched reward model).
        notes = "".join(f"\n{name}: {note}" for name, r in outcome.get("sources", {}).items()
                        for note in [r.get("boundary_summary"), *r.get("notes", [])] if note)
        kind = outcome.get("event")
        if kind == "done":
            quality = describe(outcome.get("seed_policy"), outcome.get("implicit_external_spearman"))
            return True, f"done in {elapsed}: {parts}{notes}" + (f"\n{quality}" if quality else "")
        if kind == "cancelled" or (job.stopping and kind != "error"):  # a stop before any chunk: nothing lost
            return False, f"cancelled after {elapsed}; finished chunks are kept and the next run resumes" + (
                f" ({parts})" if parts else "")
        message = outcome.get("message") or job.stderr_tail or f"dmtui score exited with code {job.returncode}"
        hint = outcome.get("hint")
        return False, f"failed: {message}" + (f"\nhint: {hint}" if hint else "")

    def _set_running(self, running: bool) -> None:
        self.query_one("#score-start", Button).disabled = running
        self.query_one("#score-status", Label).update("scoring… (X stops; finished chunks are kept)"
                                                      if running else "")

    def show_progress(self, event: dict) -> None:
        """Per-source bars for the scoring stages; other stages (loading, seed DPO) as status."""
        stage, done, total = event.get("stage", ""), int(event.get("done") or 0), event.get("total")
        unit, elapsed = event.get("unit", "items"), float(event.get("elapsed_s") or 0.0)
        if stage in SOURCES:
            self.query_one(f"#progress-row-{stage}").display = True
            self.query_one(f"#progress-{stage}", ProgressBar).update(total=total, progress=done)
            rate = done / elapsed if elapsed > 0 else None
            finished = total is not None and done >= total
            if finished:
                timing = f"done in {clock(elapsed)}"
            elif rate and total:
                timing = f"ETA {clock((total - done) / rate)}"
            else:
                timing = ""
            self.query_one(f"#rate-{stage}", Label).update(
                (f"{rate:,.1f} {unit}/s  " if rate else "") + timing)
        else:
            detail = f" {done:,}/{total:,} {unit}" if total else ""
            self.query_one("#score-status", Label).update(
                Text(f"{stage}{detail} {event.get('message', '')}".strip()))
