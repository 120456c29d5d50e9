"""Snapshots of the main screens (pytest-textual-snapshot). Update after a deliberate
change with `./dev test tests/test_snapshots.py --snapshot-update` and look at the SVGs.

Rendering details change between Textual releases, so the comparison runs on the
release the snapshots were recorded with and is skipped on others.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import textual
from app_pilot import settle

from core.store.workspace import Workspace
from dmtui.app import DmtuiApp

RECORDED_WITH = "8.2.8"
pytestmark = pytest.mark.skipif(textual.__version__ != RECORDED_WITH,
                                reason=f"snapshots were recorded with textual {RECORDED_WITH}")
MARGINS = ["external=score_chosen,score_rejected", "implicit=implicit_m"]


@pytest.fixture
def app(tmp_path) -> DmtuiApp:
    rng = np.random.default_rng(11)
    rows = [{"prompt": f"How do I fix bug number {i} in my parser?",
             "chosen": f"Check the tokenizer state before line {i}; then add a test for it.",
             "rejected": f"Rewrite everything from scratch, bug {i} will go away.",
             "score_chosen": int(rng.integers(1, 10)), "score_rejected": int(rng.integers(1, 10)),
             "implicit_m": round(float(rng.normal(0, 3)), 3)} for i in range(120)]
    folder = tmp_path / "snap"
    folder.mkdir()
    data = folder / "bugs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"prompt": null}\n')
    workspace = Workspace.open_or_create(str(data), folder / "bugs.dmtui")
    yield DmtuiApp(workspace, margin_specs=MARGINS)
    shutil.rmtree(folder, ignore_errors=True)


async def _settle(pilot) -> None:
    await settle(pilot.app, pilot)
    await pilot.pause(0.2)  # let the last frame draw before the screenshot


def after(*keys: str):
    """A run_before that waits for the app, presses `keys` one by one, and waits again."""
    async def run_before(pilot) -> None:
        await _settle(pilot)
        for key in keys:
            await pilot.press(key)
            await _settle(pilot)

    return run_before


def test_dataset_tab(app, snap_compare):
    assert snap_compare(app, terminal_size=(100, 30), run_before=after())


def test_curate_tab(app, snap_compare):
    assert snap_compare(app, terminal_size=(120, 36), run_before=after("2"))


def test_pair_detail(app, snap_compare):
    assert snap_compare(app, terminal_size=(100, 30), run_before=after("2", "enter", "t"))


def test_score_tab(app, snap_compare):
    assert snap_compare(app, terminal_size=(100, 30), run_before=after("3"))


def test_snapshots_exist():
    """A missing snapshot would be written on the fly and pass: make sure all are committed."""
    folder = Path(__file__).parent / "__snapshots__" / "test_snapshots"
    names = {p.stem for p in folder.glob("*.svg")}
    assert {"test_dataset_tab", "test_curate_tab", "test_pair_detail", "test_score_tab"} <= names
