"""The app's frame: keys and fields, Esc, the palette, safe quit, help, the Dataset tab's
tables, the Score tab's effective values, the runs view and `dmtui runs`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest
from app_pilot import open_curate, settle, wait_for
from processes import alive, descendants
from test_app_curation import MARGINS
from test_app_curation import workspace as workspace  # noqa: F401 - the fixture
from test_app_dataset import rendered_text
from test_app_score import small_demo
from textual.containers import VerticalScroll
from textual.widgets import Input, Markdown, TabbedContent
from textual_plotext import PlotextPlot

from core.store.workspace import Workspace
from dmtui.app import DmtuiApp
from dmtui.cli import main
from dmtui.commands import COMMANDS
from dmtui.screens.confirm import ConfirmScreen
from dmtui.screens.help import HelpScreen
from dmtui.screens.pair_detail import PairDetailScreen
from dmtui.screens.runs import RunsScreen
from dmtui.widgets.curation_pane import CurationPane
from dmtui.widgets.examples_table import ExamplesTable
from dmtui.widgets.pairs_preview import PairsPreview
from dmtui.widgets.score_pane import ScorePane
from dmtui.widgets.state_checkbox import StateCheckbox


async def test_a_field_takes_its_keys_and_esc_gives_them_back(workspace):  # noqa: F811
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_curate(app, pilot)
        tabs = app.screen.query_one("#tabs", TabbedContent)
        budget = app.screen.query_one("#budget", Input)
        before = budget.value
        budget.focus()
        await pilot.pause()
        await pilot.press("3", "?")  # typed into the field: no tab switch, no help, nothing replaced
        assert budget.value == before + "3?" and tabs.active == "curate"
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("escape")  # leaves the field, onto the examples table
        assert isinstance(app.screen.focused, ExamplesTable)
        await pilot.press("3")
        assert tabs.active == "score"
        device = app.screen.query_one("#score-device", Input)
        plain = (device.styles.background, device.styles.outline_left)
        device.focus()
        await pilot.pause()
        assert device.styles.background != plain[0]  # focus shows as colour ...
        assert device.styles.outline_left[0] and not plain[1][0]  # ... and as a bar at the left edge
        await pilot.press("escape")
        assert app.screen.focused is None  # no table on this tab: nothing has focus, the keys are global
        await pilot.press("X")
        assert any("Nothing is running" in str(n.message) for n in app._notifications)


async def test_score_and_run_panes_are_mounted_on_first_need_and_show_what_came_before(workspace):  # noqa: F811
    """The Score and Run tabs are composed when first shown (a start styles only the Dataset
    and Curate tabs); what the screen told them before (the export plan, the dataset's
    size) is what they show then, and a tab restored from the settings has its pane."""
    from dmtui.widgets.run_pane import RunPane

    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        curation = app.screen.query_one(CurationPane)
        await wait_for(lambda: curation.selection is not None, pilot, 30)
        await settle(app, pilot)
        assert not app.screen.query(ScorePane) and not app.screen.query(RunPane)
        await pilot.press("4")
        plan = str(app.screen.query_one(RunPane).query_one("#export-plan").render())
        assert f"-> {curation.selection.selected:,} pairs selected" in plan
        assert not app.screen.query(ScorePane)
        await pilot.click("#--content-tab-score")  # the mouse, not 3
        pane = app.screen.query_one(ScorePane)
        await wait_for(lambda: "auto" in str(pane.query_one("#score-seed-effective").render()), pilot, 30)
        assert app.screen.query_one("#tabs", TabbedContent).active == "score"
    workspace.update_settings("tab", "run")
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.screen.query_one("#tabs", TabbedContent).active == "run"
        run = app.screen.query_one(RunPane)
        await wait_for(lambda: "pairs selected" in str(run.query_one("#export-plan").render()), pilot, 30)
        assert not app.screen.query(ScorePane)


def test_the_palette_names_the_work_each_entry_starts():
    names = {name: action for name, _, action in COMMANDS}
    assert names["score: start scoring now (S)"] == "score"
    assert names["run: export the selection now (E)"] == "export"
    assert names["run: start training on the latest export (T)"] == "train"
    assert names["work: stop scoring or training (X)"] == "stop_work"


async def test_quit_while_scoring_asks_stops_the_child_and_leaves_none(tmp_path, demo_models):
    workspace = Workspace.open_or_create(str(small_demo(tmp_path, 400)), tmp_path / "ws")
    app = DmtuiApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        pane = app.screen.query_one(ScorePane)
        pane.query_one("#score-reward_model", Input).value = str(demo_models.reward)
        pane.query_one("#score-reference_model", Input).value = str(demo_models.policy)
        pane.query_one("#score-seed-lr", Input).value = "1e-4"
        await pilot.press("1", "S")  # from the Dataset tab
        await wait_for(lambda: pane.job is not None and pane.job.process is not None, pilot, 30)
        child = pane.job.process.pid
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "scoring" in str(app.screen.query_one("#confirm-body").render())
        await pilot.press("n")
        assert app.is_running and pane.running
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        for _ in range(600):
            if app._exit:
                break
            await asyncio.sleep(0.1)
        assert app._exit, "the app did not quit"
    assert not alive(child)
    assert descendants(os.getpid()) == set()


async def test_help_scrolls_from_the_keyboard_and_names_every_key(workspace):  # noqa: F811
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        scroll = app.screen.query_one(VerticalScroll)
        await pilot.pause()
        await pilot.press("pagedown")
        await pilot.pause()
        assert scroll.scroll_y > 0
        assert scroll.max_scroll_x == 0  # nothing cut off at 80 columns
        source = app.screen.query_one(Markdown).source
        for words in ("Esc", "✓", "⚑", "⇄", "✗", "budget", "M1", "filter", "Export", "Train", "`S`", "`E`", "`T`",
                      "`X`", "`c`", "`p`", "✂", "A text field takes every key", "Close this help"):
            assert words in source, words
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_dataset_tab_preview_opens_a_pair_and_end_goes_last(workspace):  # noqa: F811
    app = DmtuiApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        preview = app.screen.query_one(PairsPreview)
        assert app.screen.focused is preview
        summary = rendered_text(app.screen.query_one("#summary").content)
        assert "no scores yet: press 3 and then S" in summary
        await pilot.press("2")
        await settle(app, pilot)
        empty_curate = str(app.screen.query_one("#selection-stats").render())
        assert "press 3, then S, to score" in empty_curate and "dmtui score" not in empty_curate
        await pilot.press("1")
        preview.focus()
        await pilot.press("end")
        assert preview.cursor_row == preview.row_count - 1
        await pilot.press("enter")
        assert isinstance(app.screen, PairDetailScreen)
        assert app.screen.index == preview.row_count - 1


async def test_score_tab_shows_effective_values_and_readable_checkboxes(tmp_path):
    workspace = Workspace.open_or_create(str(small_demo(tmp_path, 120)), tmp_path / "ws")
    app = DmtuiApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        pane = app.screen.query_one(ScorePane)
        effective = pane.query_one("#score-seed-effective")
        await wait_for(lambda: "auto" in str(effective.render()), pilot, 30)
        assert str(effective.render()) == "auto: 2 × 60 (all)"  # cross-fit: each half trains one pi_1 on all of it
        pane.query_one("#score-seed-pairs", Input).value = "50"
        await wait_for(lambda: str(effective.render()) == "2 × 50 (cap)", pilot, 10)
        boxes = {box.id: str(box.render()) for box in pane.query(StateCheckbox)}
        assert "✓" in boxes["score-source-external"] and "✓" not in boxes["score-source-ifd"]
        pane.query_one("#score-batch-tokens", Input).value = "lots"
        await pilot.press("S")
        assert any("batch tokens 'lots' is not a whole number" in str(n.message) for n in app._notifications)
        assert not pane.running


def write_run(runs: Path, name: str, mode: str, budget, kind: str, losses: list[float], status: str = "done"):
    """A run folder as `dmtui train` leaves it, over an export folder with its manifest."""
    export = runs.parent / "exports" / f"export-{name}"
    export.mkdir(parents=True)
    (export / "manifest.json").write_text(json.dumps({
        "selection": {"params": {"mode": mode, "budget": budget, "budget_kind": kind, "source": "external"}},
        "counts": {"selected": 40, "total": 400}}))
    folder = runs / name
    folder.mkdir(parents=True)
    record = {"config": {"model": "m", "loss": "dpo"}, "data": {"kind": "export", "path": str(export), "pairs": 40}}
    if status != "unfinished":
        record["outcome"] = {"status": status}
    (folder / "run.json").write_text(json.dumps(record))
    metrics = [{"step": i + 1, "total_steps": len(losses), "loss": loss, "reward_margin": 0.1 * i,
                "reward_accuracy": 0.5 + 0.01 * i, "learning_rate": 5e-7} for i, loss in enumerate(losses)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics) + '{"step": 9, "lo')


def test_runs_command_compares_the_workspace_runs(workspace, capsys):  # noqa: F811
    write_run(workspace.runs_dir, "run-20260101-000000", "dm-mul", 0.1, "fraction", [0.6931471805599453, 0.61234567])
    write_run(workspace.runs_dir, "run-20260102-000000", "bot", 40, "count", [0.69, 0.7012345], "cancelled")
    assert main(["runs", str(workspace.root)]) == 0
    out = capsys.readouterr().out
    assert "dm-mul 10% (40 pairs)" in out and "bot:external 40 (40 pairs)" in out
    assert "0.6123" in out and "0.7012" in out and "0.61234567" not in out  # 4 significant digits
    assert "cancelled" in out and "2/2" in out
    assert main(["runs", str(workspace.root), "--json"]) == 0
    runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(r["metrics"]) for r in runs] == [2, 2]  # the line a kill cut short is skipped
    assert main(["runs", str(workspace.root / "nothing")]) == 1


async def test_runs_view_overlays_the_curves_at_80x24(workspace):  # noqa: F811
    write_run(workspace.runs_dir, "run-a", "dm-mul", 0.1, "fraction", [0.69, 0.6, 0.5])
    write_run(workspace.runs_dir, "run-b", "top", 0.1, "fraction", [0.69, 0.65, 0.62])
    app = DmtuiApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        assert app.screen.query_one("#runs-table").row_count == 2
        charts = list(app.screen.query(PlotextPlot))
        assert len(charts) == 4
        assert all(chart.size.height >= 3 and chart.size.width >= 30 for chart in charts), [c.size for c in charts]
        loss = charts[0].plt
        loss.plotsize(charts[0].size.width, charts[0].size.height)
        built = loss.build()
        drawn = loss.uncolorize(built)
        assert "loss against step" in drawn and "3.00" in drawn  # title and the step axis
        line_colours = set(re.findall(r"\x1b\[38;5;(\d+)m[⠀-⣿]", built))
        assert len(line_colours) == 2, line_colours  # one line per run
        swatches = {str(app.screen.query_one("#runs-table").get_row_at(i)[0].style) for i in range(2)}
        assert len(swatches) == 2  # the table tells the runs' colours apart


@pytest.mark.parametrize("data_is", ["plain folder", "workspace"])
def test_dmtui_folder_opens_the_launcher_there(tmp_path, monkeypatch, data_is):
    from dmtui.headless.open import opens_launcher

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    folder = tmp_path if data_is == "plain folder" else Workspace.open_or_create(str(data), tmp_path / "ws").root
    assert opens_launcher(str(folder)) is (data_is == "plain folder")
    started = {}
    monkeypatch.setattr(DmtuiApp, "run", lambda self: started.update(folder=self.start_folder,
                                                                   workspace=self.workspace))
    assert main([str(folder)]) == 0
    if data_is == "plain folder":
        assert started == {"folder": folder, "workspace": None}
    else:
        assert started["workspace"].root == folder
    assert main([]) == 0 and started["workspace"] is None  # `dmtui` alone: the launcher


def type_burst(app, text: str) -> None:
    """`text` as the terminal sends it, arriving in one read (a paste, a fast typist, a slow SSH link)."""
    from textual._xterm_parser import XTermParser

    for event in XTermParser().feed(text):
        app._driver.process_message(event)


async def test_keys_after_a_key_that_moves_focus_go_to_the_new_focus(workspace):  # noqa: F811
    """`/` then a word in one burst searches for the word (its `q` does not quit, its `o` does
    not sort); `m`, Tab, then an edit of the budget edits the budget (its digits switch no tab)."""
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        assert isinstance(app.screen.focused, ExamplesTable)
        sort, search, budget = pane.view.sort, app.screen.query_one("#search", Input), app.screen.query_one("#budget", Input)
        type_burst(app, "/question")
        await wait_for(lambda: search.value == "question" or app.return_code is not None, pilot, 20)
        assert app.return_code is None and search.value == "question" and app.screen.focused is search
        await pilot.press("escape")
        type_burst(app, "/\x15ok")  # ctrl+u clears the field first
        await wait_for(lambda: search.value == "ok", pilot, 20)
        assert pane.view.sort == sort
        await pilot.press("escape")
        tabs = app.screen.query_one("#tabs", TabbedContent)
        type_burst(app, "m\t\x1b[F\x7f\x7f\x7f\x7f\x7f\x7f42")  # End, then backspaces
        await wait_for(lambda: budget.value == "42" or tabs.active != "curate", pilot, 20)
        assert tabs.active == "curate" and budget.value == "42"


async def test_a_burst_of_keys_edits_a_field_in_the_order_typed(workspace):  # noqa: F811
    """Backspaces then digits arriving in one read (a paste, a fast typist) all land, in order."""
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        field = app.screen.query_one("#score-device", Input)
        field.focus()
        await pilot.pause()
        type_burst(app, "cpx\x7f\x7f\x7fcuda:12\x1b[D\x7f\x1b[C3")
        await pilot.pause(0.5)
        assert field.value == "cuda:23"


async def test_t_trains_on_an_export_written_before_the_app_started(workspace):  # noqa: F811
    """The newest finished export under exports/ (one without its manifest is not finished)."""
    from dmtui.widgets.run_pane import RunPane

    for age, (name, selected) in enumerate([("unfinished", None), ("newer", 9), ("older", 7)]):
        folder = workspace.root / "exports" / name
        folder.mkdir(parents=True)
        if selected is not None:
            (folder / "manifest.json").write_text(json.dumps({"counts": {"selected": selected, "total": 300}}))
            os.utime(folder / "manifest.json", (1e9 - age * 100, 1e9 - age * 100))
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_curate(app, pilot)
        await pilot.press("4")
        run = app.screen.query_one(RunPane)
        run.query_one("#train-model", Input).value = "some/model"
        plan = run.plan_training()
        assert plan.export == str(workspace.root / "exports" / "newer") and "of 9 pairs" in plan.steps
        await pilot.press("T")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "exports/newer" in str(app.screen.query_one("#confirm-body").render())
        await pilot.press("n")


STUBBORN_CHILD = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "print('{\"event\": \"progress\", \"stage\": \"external\", \"done\": 0, \"total\": 10}', flush=True); "
                  "time.sleep(600)")
"""A scoring child that ignores SIGTERM, as one stuck in a GPU call or a collective would."""


async def test_quit_offers_to_kill_work_that_does_not_stop(tmp_path, monkeypatch):
    monkeypatch.setattr("dmtui.app.QUIT_WAIT_S", 1.0)
    app = DmtuiApp(Workspace.open_or_create(str(small_demo(tmp_path, 50)), tmp_path / "ws"))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        pane = app.screen.query_one(ScorePane)
        pane.run_scoring([sys.executable, "-c", STUBBORN_CHILD])
        await wait_for(lambda: pane.running, pilot, 30)
        child = pane.job.process.pid
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")  # SIGTERM, ignored
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen), pilot, 20)
        assert "has not stopped" in str(app.screen.query_one("#confirm-title").render())
        assert "scoring" in str(app.screen.query_one("#confirm-body").render())
        await pilot.press("n")  # keep waiting
        await pilot.pause(0.3)
        assert app.is_running and alive(child)
        await pilot.press("q")  # q again: the offer comes at once
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(lambda: app._exit, pilot, 20)
    assert not alive(child)
