"""Score the dataset from the app: pick the models and sources, watch per-source progress.

The pane only collects settings and shows progress: it posts `ScoreRequested`, the
screen runs `core.scoring.score` in a thread worker (the engine keeps models loaded
between runs, so rescoring after adding rows is quick) and reports back here. Scores
land in the workspace as they are checkpointed, so cancelling (Esc) or a crash keeps
every finished chunk and the next run resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar

from core.defaults import DEFAULT_BATCH_TOKENS
from core.progress import Progress

SOURCES = ("external", "implicit", "ifd")


@dataclass
class ScoreRequested(Message):
    """Score with these `core.scoring.ScoringConfig` fields."""

    settings: dict


class ScorePane(Vertical):
    def __init__(self, defaults: dict[str, str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.defaults = defaults

    def compose(self) -> ComposeResult:
        fields = (
            ("reward_model", "reward model", "external margin: a sequence-classification model, folder or hub id"),
            ("reference_model", "pi_0 (SFT)", "the SFT model: implicit margin reference and IFD"),
            ("policy_model", "pi_1", "optional: pi_0 after DPO (or a LoRA adapter); empty = seed DPO on D0"),
        )
        for key, label, placeholder in fields:
            with Horizontal(classes="score-row"):
                yield Label(label, classes="score-name")
                yield Input(self.defaults.get(key, ""), placeholder=placeholder, id=f"score-{key}", compact=True)
        with Horizontal(classes="score-row"):
            yield Label("sources", classes="score-name")
            for source in SOURCES:
                yield Checkbox(source, value=source != "ifd", id=f"score-source-{source}", compact=True)
        with Horizontal(classes="score-row"):
            yield Label("device", classes="score-name")
            yield Input(self.defaults.get("device", "auto"), id="score-device", compact=True)
            yield Label("batch tokens", classes="score-name")
            yield Input(str(DEFAULT_BATCH_TOKENS), id="score-batch-tokens", compact=True)
            yield Label("max length", classes="score-name")
            yield Input("1024", id="score-max-length", compact=True)
        with Horizontal(classes="score-row"):
            yield Label("seed DPO D0", classes="score-name")
            yield Label("pairs", classes="score-name")
            yield Input("2000", id="score-seed-pairs", compact=True)
            yield Label("lr", classes="score-name")
            yield Input(self.defaults.get("seed_lr", "5e-7"), id="score-seed-lr", compact=True)
            yield Button("Score", id="score-start", compact=True, variant="primary")
        yield Label("", id="score-status")
        for source in SOURCES:
            with Horizontal(classes="score-progress", id=f"progress-row-{source}"):
                yield Label(source, classes="score-name")
                yield ProgressBar(id=f"progress-{source}", show_eta=True)
                yield Label("", id=f"rate-{source}", classes="score-rate")

    def on_mount(self) -> None:
        for source in SOURCES:
            self.query_one(f"#progress-row-{source}").display = False

    @on(Button.Pressed, "#score-start")
    def _start(self) -> None:
        sources = tuple(s for s in SOURCES if self.query_one(f"#score-source-{s}", Checkbox).value)
        if not sources:
            self.notify("Pick at least one margin source", severity="warning")
            return
        try:
            numbers = {
                "max_length": int(self.query_one("#score-max-length", Input).value),
                "batch_tokens": int(self.query_one("#score-batch-tokens", Input).value),
                "seed_pairs": int(self.query_one("#score-seed-pairs", Input).value),
                "seed_lr": float(self.query_one("#score-seed-lr", Input).value),
            }
        except ValueError:
            self.notify("batch tokens, max length and seed pairs must be whole numbers, seed lr a number",
                        severity="error")
            return
        settings = {
            "sources": sources,
            "reward_model": self.query_one("#score-reward_model", Input).value.strip() or None,
            "reference_model": self.query_one("#score-reference_model", Input).value.strip() or None,
            "policy_model": self.query_one("#score-policy_model", Input).value.strip() or None,
            "device": self.query_one("#score-device", Input).value.strip() or "auto",
            **numbers,
        }
        self.set_running(True)
        self.screen.set_focus(None)  # the tab keys (1-4) keep working while it runs
        self.post_message(ScoreRequested(settings))

    def set_running(self, running: bool) -> None:
        self.query_one("#score-start", Button).disabled = running
        self.query_one("#score-status", Label).update("scoring… (Esc cancels; finished chunks are kept)"
                                                      if running else "")

    def show_progress(self, progress: Progress) -> None:
        """Per-source bars for the scoring stages; other stages (loading, seed DPO) as status."""
        if progress.stage in SOURCES:
            self.query_one(f"#progress-row-{progress.stage}").display = True
            self.query_one(f"#progress-{progress.stage}", ProgressBar).update(total=progress.total,
                                                                             progress=progress.done)
            rate = progress.rate
            eta = progress.eta_s
            self.query_one(f"#rate-{progress.stage}", Label).update(
                (f"{rate:,.1f} {progress.unit}/s" if rate else "")
                + (f"  ETA {time.strftime('%M:%S', time.gmtime(eta))}" if eta is not None else ""))
        else:
            detail = f" {progress.done:,}/{progress.total:,} {progress.unit}" if progress.total else ""
            self.query_one("#score-status", Label).update(Text(f"{progress.stage}{detail} {progress.message}".strip()))

    def finished(self, summary: str) -> None:
        self.set_running(False)
        self.query_one("#score-status", Label).update(Text(summary))  # may quote paths: not markup
