"""The refresh path at 200k pairs: keys are answered while a refresh runs, and a budget
edit re-sorts nothing (the table's order comes from the cached sort)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from app_pilot import open_curate, settle, wait_for
from textual.widgets import Input

import core.selection.views as views
import dmtui.widgets.curation_pane as curation_pane
from core.store.workspace import Workspace
from dmtui.app import DmtuiApp
from dmtui.widgets.examples_table import ExamplesTable
from dmtui.widgets.margin_plots import MarginPlots

PAIRS = 200_000
MARGINS = ["external=sc,sr", "implicit=im"]


@pytest.fixture(scope="module")
def big_workspace(tmp_path_factory) -> Workspace:
    folder = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(5)
    sc, sr, im = (np.round(rng.normal(loc, 2, PAIRS), 3) for loc in (1.0, 0.0, 0.0))
    lines = [f'{{"id": "big-{i:06d}", "prompt": "question {i}", "chosen": "good answer {i}", '
             f'"rejected": "bad answer {i}", "sc": {sc[i]}, "sr": {sr[i]}, "im": {im[i]}}}\n' for i in range(PAIRS)]
    data = folder / "big.jsonl"
    data.write_text("".join(lines))
    workspace = Workspace.open_or_create(str(data), folder / "ws")
    workspace.load()  # the cache, so each test opens it memory-mapped
    return workspace


async def test_keys_are_answered_while_a_refresh_runs(big_workspace, monkeypatch):
    gate = threading.Event()
    in_refresh = threading.Event()
    real_plots = curation_pane.selection_plots

    def held_plots(*args, **kwargs):  # the worker stops here until the test lets it go
        in_refresh.set()
        gate.wait(60)
        return real_plots(*args, **kwargs)

    app = DmtuiApp(Workspace.open(big_workspace.root), margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        assert pane.selection.total == PAIRS
        table = pane.query_one(ExamplesTable)
        plots = pane.query_one(MarginPlots)
        table.focus()
        before = pane.selection
        monkeypatch.setattr(curation_pane, "selection_plots", held_plots)
        pane.query_one("#budget", Input).value = "25%"
        await wait_for(in_refresh.is_set, pilot, 30)

        await pilot.press("down", "down", "v")  # answered at once, the refresh still running
        assert table.cursor == 2 and plots.view == 1
        assert pane.selection is before and not gate.is_set()

        gate.set()
        await settle(app, pilot)
        assert pane.selection is not before and pane.selection.selected == PAIRS // 4
        assert table.cursor == 2  # the same pair stays under the cursor (the order did not change)


async def test_a_budget_edit_reuses_the_sort(big_workspace, monkeypatch):
    app = DmtuiApp(Workspace.open(big_workspace.root), margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        sorts = []
        real_sort = views.sorted_order
        monkeypatch.setattr(views, "sorted_order", lambda *args: sorts.append(1) or real_sort(*args))
        table = pane.query_one(ExamplesTable)
        first_rows = table.rows.copy()
        for budget in ("5%", "30%", "1000"):
            pane.query_one("#budget", Input).value = budget
            await settle(app, pilot)
        assert not sorts and pane.selection.selected == 1000
        np.testing.assert_array_equal(table.rows, first_rows)
        pane.query_one("#m1-1", Input).value = "-1"  # new scores: one new sort
        await settle(app, pilot)
        assert len(sorts) == 1
        score = views.displayed_score(pane.selection)
        assert (np.diff(score[table.rows[:1000]]) <= 0).all()
