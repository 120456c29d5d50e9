"""The Curate tab, driven by Textual's pilot: tune, filter, search, inspect, annotate."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from app_pilot import open_curate, settle, wait_for
from textual.widgets import Input, RichLog, Select

from core.store.annotations import AnnotationStore
from core.store.workspace import Workspace
from dmtui.app import DmtuiApp
from dmtui.screens.pair_detail import PairDetailScreen, marked_difference
from dmtui.screens.source_picker import SourcePicker
from dmtui.widgets.dataset_summary import DatasetSummary
from dmtui.widgets.examples_table import ExamplesTable

N = 200
MARGINS = ["external=score_chosen,score_rejected", "implicit=implicit_m"]


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    rng = np.random.default_rng(3)
    lines = []
    for i in range(N):
        lines.append(json.dumps({
            "prompt": f"question number {i}" + (" about zebras" if i % 50 == 0 else ""),
            "chosen": f"a good answer {i}",
            "rejected": f"a bad answer {i}",
            "score_chosen": int(rng.integers(1, 10)),
            "score_rejected": int(rng.integers(1, 10)),
            "implicit_m": float(rng.normal(0, 3)),
        }))
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return Workspace.open_or_create(str(data), tmp_path / "ws")


async def test_curate_tab_tunes_filters_and_searches(workspace):
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        table = pane.query_one(ExamplesTable)
        assert len(table.rows) == N
        assert pane.selection.selected == 20  # default budget 10%
        summary = app.screen.query_one(DatasetSummary)
        assert summary.scores == {"external": (N, N), "implicit": (N, N)}

        budget = pane.query_one("#budget", Input)
        budget.value = "35"
        await settle(app, pilot)
        assert pane.selection.selected == 35

        def saved_budget():
            return json.loads(workspace.settings_path.read_text())["curation"]["budget"] if \
                workspace.settings_path.exists() else None

        await wait_for(lambda: saved_budget() == "35", pilot, 5)  # written once the keys stop

        budget.value = "not a budget"
        await settle(app, pilot)
        assert budget.has_class("invalid") and pane.selection.selected == 35  # last good one stays
        pane.query_one("#mode", Select).value = "dm-add"
        await settle(app, pilot)
        assert pane.selection.params.mode == "dm-mul"  # nothing applies while a field is invalid
        budget.value = "35"
        await settle(app, pilot)
        assert pane.selection.params.mode == "dm-add" and not budget.has_class("invalid")

        pane.query_one("#row-filter", Select).value = "selected"
        await settle(app, pilot)
        assert len(table.rows) == 35 and pane.selection.mask[table.rows].all()
        scores = pane.selection.score[table.rows]
        assert (np.diff(scores) <= 0).all()  # sorted by score, descending

        pane.query_one("#row-filter", Select).value = "all"
        pane.query_one("#search", Input).value = "zebras"
        await settle(app, pilot)
        assert len(table.rows) == N // 50

        pane.query_one("#mode", Select).value = "top"
        pane.query_one("#search", Input).value = ""
        await settle(app, pilot)
        assert pane.selection.params.mode == "top"


async def test_annotations_are_written_at_once_and_survive_a_restart(workspace):
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        table = pane.query_one(ExamplesTable)
        top_index = int(table.rows[0])
        top_id = pane.pair_ids[top_index].as_py()
        assert pane.selection.mask[top_index]
        table.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, PairDetailScreen)
        await pilot.press("t")
        await pilot.press("l")  # a second flag joins the first
        assert "before your changes" not in str(app.screen.query_one("#pair-header").render())
        await pilot.press("x")
        assert "before your changes" in str(app.screen.query_one("#pair-header").render())
        # Durable before leaving the screen: a second connection sees it now.
        with AnnotationStore(workspace.annotations_path) as other:
            assert other.get(top_id).flags == ("toxic", "mislabeled") and other.get(top_id).excluded
        await pilot.press("n")
        await pilot.press(*"looks fine", "enter")
        await pilot.press("u")  # undo the note
        await pilot.press("escape")
        await settle(app, pilot)
        assert not pane.selection.mask[top_index]  # excluded pairs are never selected
        assert pane.annotations.excluded[top_index] and pane.annotations.flags["mislabeled"][top_index]

    restarted = DmtuiApp(Workspace.open(workspace.root), margin_specs=MARGINS)
    async with restarted.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(restarted, pilot)
        assert pane.annotations.excluded[top_index]
        assert not pane.selection.mask[top_index]
        annotation = pane.store.get(top_id)
        assert annotation.flags == ("toxic", "mislabeled") and annotation.note == ""


async def test_margins_that_arrive_while_a_pair_is_open_wait_for_it(workspace):
    """Scoring that finishes (the margins resolved again) while the pair view is open: the
    view keeps annotating (it shares the Curate pane's store, which a rebuilt pane closed:
    the next key crashed the app), and the rebuilt pane, made once the view is closed,
    holds what the view changed."""
    from dmtui.widgets.curation_pane import CurationPane

    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        table = pane.query_one(ExamplesTable)
        top_index = int(table.rows[0])
        table.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, PairDetailScreen)
        app.main_screen.resolve_margins(app.dataset)  # what a finished scoring does
        await app.main_screen.workers.wait_for_complete()
        await pilot.pause(0.2)
        await pilot.press("x")
        assert pane.store.get(pane.pair_ids[top_index].as_py()).excluded
        await pilot.press("escape")
        await settle(app, pilot)
        rebuilt = app.main_screen.query_one(CurationPane)
        assert rebuilt is not pane
        await wait_for(lambda: rebuilt.selection is not None, pilot, 30)
        assert rebuilt.annotations.excluded[top_index] and not rebuilt.selection.mask[top_index]


async def test_spot_check_walks_the_bot_region_of_the_source_picked(workspace):
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        await pilot.press("B")
        assert isinstance(app.screen, SourcePicker)
        await pilot.press("down", "enter")  # implicit
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, PairDetailScreen) and screen.walk_title == "spot-check BOT of implicit"
        implicit = pane.session.effective_margin("implicit")
        region = pane.session.select(replace(pane.selection.params, mode="bot", source="implicit")).mask
        assert pane.view.row_filter == "bot:implicit"  # the table shows what B walks
        assert sorted(screen.rows.tolist()) == np.flatnonzero(region).tolist()
        walked = [implicit[screen.index]]
        for _ in range(5):
            await pilot.press("]")
            walked.append(implicit[screen.index])
        assert walked == sorted(walked) and walked[0] == implicit[region].min()
        await pilot.press("s")  # swap the worst pair
        assert pane.store.get(pane.pair_ids[screen.index].as_py()).swapped
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("B")  # the filter shows a BOT region: B walks it without asking
        await settle(app, pilot)
        assert isinstance(app.screen, PairDetailScreen) and app.screen.walk_title == "spot-check BOT of implicit"


def unscored_workspace(tmp_path) -> Workspace:
    data = tmp_path / "plain.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": f"a{i}", "rejected": f"b{i}"}) + "\n"
                            for i in range(30)))
    return Workspace.open_or_create(str(data), tmp_path / "ws")


async def test_at_80x24_an_unscored_curate_tab_shows_the_keys_to_score(tmp_path):
    """Review 1 item 20: the mode's problem said the CLI's long hint, which pushed "press 3,
    then S" below the fold; the app says the keys (the CLI keeps its own words)."""
    app = DmtuiApp(unscored_workspace(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        pane = await open_curate(app, pilot)
        problem = pane.query_one("#problem-mode")
        text = " ".join(str(problem.render()).split())
        assert "DM-MUL needs margins" in text and "press 3, then S, to score" in text and "dmtui score" not in text
        assert problem.region.height and problem.region.bottom <= app.screen.region.bottom - 2  # above the footer


async def test_without_margins_the_curate_tab_says_what_to_do_and_random_works(tmp_path):
    app = DmtuiApp(unscored_workspace(tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await open_curate(app, pilot)
        stats = str(pane.query_one("#selection-stats").render())
        assert "No margins yet: press 3" in stats and "Random needs no margin" in stats
        assert "needs margins" in str(pane.query_one("#problem-mode").render())  # DM-MUL, the default
        assert pane.selection is None and pane.export_problem().startswith("mode:")
        pane.query_one("#mode", Select).value = "random"
        await settle(app, pilot)
        assert pane.selection.selected == 3 and not pane.query_one("#problem-mode").display
        assert pane.export_problem() is None
        out = tmp_path / "random-export"
        assert pane.export(str(out), include_scores=True) is None
        await wait_for(lambda: (out / "manifest.json").exists(), pilot, 30)
        await settle(app, pilot)
        await pilot.press("4")  # the Run tab, first shown after the export, logs it
        log = app.screen.query_one("#run-log", RichLog)
        assert any("exported 3 of 30 pairs" in line.text for line in log.lines)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["selected"] == 3 and manifest["selection"]["params"]["mode"] == "random"


def test_differences_are_marked_word_by_word():
    chosen, rejected = marked_difference("the cat sat here", "the dog sat here")
    assert [span.style for span in chosen.spans] and chosen.plain == "the cat sat here"
    marked = {chosen.plain[s.start:s.end] for s in chosen.spans}
    assert marked == {"cat"} and {rejected.plain[s.start:s.end] for s in rejected.spans} == {"dog"}


async def test_every_palette_command_runs_and_help_opens(workspace):
    from textual.screen import ModalScreen

    from dmtui.commands import COMMANDS
    from dmtui.screens.help import HelpScreen

    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_curate(app, pilot)
        for name, _, action in COMMANDS:
            await app.main_screen.run_action(action)
            await settle(app, pilot)
            while isinstance(app.screen, (ModalScreen, PairDetailScreen)) or app.screen is not app.main_screen:
                await pilot.press("escape")
        await pilot.press("?")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.screen is app.main_screen
        await pilot.press("ctrl+p")
        await pilot.press(*"spot")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, SourcePicker)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, PairDetailScreen) and "spot-check" in app.screen.walk_title


@pytest.mark.parametrize("stored", [
    "not an object",
    {"mode": "nonsense", "source": 3, "budget": ["5%"], "m1": "x", "m2": {"external": {"nested": 1}}},
    {"mode": "top", "source": "implicit", "budget": "25", "m1": {"external": True}},
])
async def test_hand_edited_settings_of_the_wrong_shape_fall_back_to_defaults(workspace, stored):
    workspace.write_settings({"curation": stored})
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        if isinstance(stored, dict) and stored["mode"] == "top":  # the well-formed values are kept
            assert (pane.selection.params.mode, pane.selection.params.source, pane.selection.selected) == (
                "top", "implicit", 25)
        else:
            assert pane.selection.params.mode == "dm-mul" and pane.selection.selected == N // 10
