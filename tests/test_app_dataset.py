"""The app's dataset screen, driven by Textual's pilot."""

from __future__ import annotations

import io
import json
import time

import pytest
from rich.console import Console
from textual.widgets import DataTable, Label, Static

from core.errors import LoadError
from core.store.workspace import Workspace
from dmtui.app import DmtuiApp
from dmtui.screens.rejections import RejectedRowScreen, RejectionsScreen
from dmtui.widgets.dataset_summary import DatasetSummary
from dmtui.widgets.examples_table import ExamplesTable
from dmtui.widgets.pairs_preview import PairsPreview
from dmtui.widgets.rejection_summary import RejectionSummary
from dmtui.widgets.score_pane import ScorePane

ROWS = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": 1},
    {"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": 2},
    {"prompt": "capital of France?", "chosen": "Paris", "rejected": "Rome", "id": 3},
    {"prompt": "x", "chosen": "same", "rejected": "same", "id": 4},
    {"prompt": None, "chosen": "a", "rejected": "b", "id": 5},
]


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    data = tmp_path / "data.jsonl"
    lines = [json.dumps(row) for row in ROWS] + ["{not json"]
    data.write_text("\n".join(lines) + "\n")
    return Workspace.open_or_create(str(data), tmp_path / "ws")


def rendered_text(renderable) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


async def _open(app: DmtuiApp, pilot) -> None:
    await pilot.pause()
    await app.screen.workers.wait_for_complete()
    await pilot.pause()


async def test_opens_with_counts_and_bad_row_summary(workspace):
    app = DmtuiApp(workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        await _open(app, pilot)
        assert app.dataset is not None and app.dataset.report.loaded == 2
        reasons = app.screen.query_one(RejectionSummary)
        assert sorted(reasons.rows) == ["duplicate_pair", "identical_responses", "malformed_json", "null_field"]
        assert reasons.border_title == "Rejected rows: 4"
        preview = app.screen.query_one(PairsPreview)
        assert preview.row_count == 2
        summary = rendered_text(app.screen.query_one(DatasetSummary).content)
        assert "2 of 6 loaded" in summary
        assert "kept      id" in summary


async def test_bad_rows_screen_lists_every_rejection_and_filters_by_reason(workspace):
    app = DmtuiApp(workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        await _open(app, pilot)
        await pilot.press("b")
        assert isinstance(app.screen, RejectionsScreen)
        assert len(app.screen.query_one(ExamplesTable).rows) == 4
        await pilot.press("escape")
        reasons = app.screen.query_one(RejectionSummary)
        reasons.focus()
        reasons.move_cursor(row=list(reasons.rows).index("malformed_json"))
        await pilot.press("enter")
        assert isinstance(app.screen, RejectionsScreen)
        table = app.screen.query_one(ExamplesTable)
        assert len(table.rows) == 1
        assert table.columns[0].cell(int(table.rows[0])) == "line 6"
        await pilot.press("enter")  # the whole rejection: message and the raw line from the file
        assert isinstance(app.screen, RejectedRowScreen)
        shown = str(app.screen.query_one(Static).render())
        assert "{not json" in shown and "line 6" in shown and "malformed_json" in shown


async def test_tens_of_thousands_of_bad_rows_open_at_once(tmp_path):
    data = tmp_path / "bad.jsonl"
    good = [json.dumps(ROWS[0]), json.dumps(ROWS[2])]
    data.write_text("\n".join(good + ["{broken " + str(i) for i in range(30_000)]) + "\n")
    app = DmtuiApp(Workspace.open_or_create(str(data), tmp_path / "ws"))
    async with app.run_test(size=(100, 30)) as pilot:
        await _open(app, pilot)
        started = time.monotonic()
        await pilot.press("b")
        await pilot.pause()
        assert time.monotonic() - started < 3
        table = app.screen.query_one(ExamplesTable)
        assert len(table.rows) == 30_000 and not app.screen.query(DataTable)
        await pilot.press("end")
        await pilot.press("enter")
        assert "{broken 29999" in str(app.screen.query_one(Static).render())


async def test_load_failure_is_shown_not_raised(workspace, monkeypatch):
    def broken(*args, **kwargs):
        raise LoadError("data.jsonl: cannot be read", "check the file")

    monkeypatch.setattr(workspace, "load", broken)
    app = DmtuiApp(workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await app.screen.workers.wait_for_complete()
        await pilot.pause()
        label = str(app.screen.query_one("#loading-label", Label).render())
        assert "cannot be read" in label and "check the file" in label
        assert app.dataset is None
        assert app.is_running


async def test_missing_demo_models_are_built_in_the_background(workspace, monkeypatch, tmp_path):
    import core.demo.models as demo_models
    from core.progress import Reporter

    built = []

    def fake_ensure(config, progress=None, cancel=None):
        reporter = Reporter("policy", 10, progress, cancel, unit="steps", interval_s=0)
        reporter.advance(3)
        built.append(config)
        return demo_models.DemoModels(tmp_path, tmp_path, tmp_path, tmp_path, {})

    monkeypatch.setattr(demo_models, "demo_models_dir", lambda config: tmp_path / "absent")
    monkeypatch.setattr(demo_models, "ensure_demo_models", fake_ensure)
    app = DmtuiApp(workspace, build_demo_models=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await _open(app, pilot)
        assert len(built) == 1
        assert any("Demo models ready" in str(n.message) for n in app._notifications)
        assert app.screen.query_one("#models-status").display is False
        # Scoring the demo from the app takes the demo's seed DPO settings, as `dmtui score --demo` does.
        await pilot.press("3")
        command = app.screen.query_one(ScorePane).command()
        assert "--demo" in command
        assert command[command.index("--seed-pairs") + 1] == str(demo_models.DEMO_SCORING["seed_pairs"])
