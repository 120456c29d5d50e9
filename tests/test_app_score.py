"""The Score tab: score with the tiny demo models from the app, stay responsive, then curate."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from app_pilot import settle, wait_for
from textual.widgets import Checkbox, Input, TabbedContent

from core.scoring.run import SourceReport
from core.store.workspace import Workspace
from dmtui.app import DmtuiApp
from dmtui.widgets.curation_pane import CurationPane
from dmtui.widgets.score_pane import ScorePane

DEMO = "sample_data/demo/pairs.jsonl"


def small_demo(tmp_path, n: int = 120):
    path = tmp_path / "demo.jsonl"
    with open(DEMO) as source:
        path.write_text("".join(itertools.islice(source, n)))
    return path


async def test_scoring_from_the_app_keeps_keys_working_and_feeds_curation(tmp_path, demo_cache_dir, demo_models,
                                                                          monkeypatch):
    monkeypatch.setenv("DMTUI_CACHE", str(demo_cache_dir))  # the app's demo models are the tests' (and its child's)
    workspace = Workspace.open_or_create(str(small_demo(tmp_path)), tmp_path / "ws")
    app = DmtuiApp(workspace, build_demo_models=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        pane = app.screen.query_one(ScorePane)
        # On the demo the Score tab starts with its models and its seed DPO settings (DEMO_SCORING).
        assert pane.query_one("#score-reward_model", Input).value == str(demo_models.reward)
        assert pane.query_one("#score-reference_model", Input).value == str(demo_models.policy)
        assert pane.query_one("#score-seed-lr", Input).value == "0.0001"
        pane.query_one("#score-source-implicit", Checkbox).value = True
        tabs = app.screen.query_one("#tabs", TabbedContent)
        await pilot.press("1")
        await pilot.press("S")  # from another tab, with the Score tab's settings
        assert pane.running
        # While the worker scores (seed DPO, then log-probs), keys are still handled.
        await wait_for(lambda: any(w.group == "score" and w.is_running for w in app.screen.workers), pilot, 10)
        await pilot.press("1")
        assert tabs.active == "dataset"
        await pilot.press("3")
        assert tabs.active == "score"
        await wait_for(lambda: not any(w.group == "score" and w.is_running for w in app.screen.workers), pilot, 240)
        # The Curate tab (there from the start, without margins) is rebuilt on the new scores.
        await wait_for(lambda: any(p.margins for p in app.screen.query(CurationPane)), pilot, 30)
        await settle(app, pilot)  # the pane mounts its controls before the test ends the app
        curation = app.screen.query_one(CurationPane)
        assert set(curation.margins) == {"external", "implicit"}
        status = str(pane.query_one("#score-status").render())
        assert status.startswith("done in ") and "scored" in status
        assert "external: 120 scored, 0 reused, 0 of 120 pairs (0.0%) cut to fit 256 tokens" in status
        assert "held-out accuracy" in status and "implicit vs external Spearman" in status  # pi_1's quality
        finished = str(pane.query_one("#rate-external").render())
        assert "done in 0" in finished and "ETA" not in finished  # elapsed time, not "ETA 00:00"

    scored = sorted(p.name for p in (workspace.root / "scores").iterdir())
    assert scored == ["external", "implicit"]


async def test_scoring_without_models_shows_the_error(tmp_path):
    workspace = Workspace.open_or_create(str(small_demo(tmp_path, 20)), tmp_path / "ws")
    app = DmtuiApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await pilot.click("#score-start")
        await settle(app, pilot)
        status = str(app.screen.query_one(ScorePane).query_one("#score-status").render())
        assert status.startswith("failed:") and "model" in status
        assert app.is_running


def test_the_finished_summary_says_what_the_run_warned_about(tmp_path):
    note = ("pi_1 (run/) and pi_0 (sft/) have different chat templates: conversations are encoded with pi_0's, "
            "which pi_1 may not have been trained on")
    report = SourceReport("implicit", "0123", pairs=120, scored=120, boundary_moved=3, notes=[note])
    ok, summary = ScorePane(tmp_path, {})._summary({"event": "done", "sources": {"implicit": report.to_json()}},
                                                   job=SimpleNamespace(stopping=False))
    assert ok and summary.splitlines()[1:] == [f"implicit: {report.boundary_summary()}", f"implicit: {note}"]
    assert report.boundary_summary().startswith("3 pairs had a token merging across the prompt/response boundary")
    assert SourceReport("implicit", "0123", pairs=120, scored=120).boundary_summary() is None
