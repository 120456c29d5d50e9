"""The Curate and Run tabs as one truth: invalid controls explained where they are typed,
Export and Train refused with the reason, the Run tab's plan, the controls each mode uses,
debounced settings, and the column mapping offered for a file with other column names."""

from __future__ import annotations

import json

from app_pilot import open_curate, settle, wait_for
from test_app_curation import MARGINS
from test_app_curation import workspace as workspace  # noqa: F401 - the fixture
from textual.widgets import Checkbox, Input, RichLog, Select, Static
from textual.widgets._select import SelectOverlay

from core.selection.selector import MODES
from core.store.workspace import Workspace, is_workspace
from dmtui.app import DmtuiApp
from dmtui.widgets.curation_pane import CurationPane
from dmtui.widgets.run_pane import RunPane


def log_text(run: RunPane) -> str:
    return "\n".join(line.text for line in run.query_one("#run-log", RichLog).lines)


def rendered(widget) -> str:
    return str(widget.render())


def shown(widget) -> bool:
    """The widget and every container above it are displayed."""
    return all(node.display for node in [widget, *widget.ancestors] if hasattr(node, "display"))


async def test_an_invalid_budget_is_explained_and_export_and_train_refuse(workspace, tmp_path):  # noqa: F811
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        pane.query_one("#budget", Input).value = "150%"
        await settle(app, pilot)
        problem = pane.query_one("#problem-budget", Static)
        assert problem.display and "150% is not a fraction" in rendered(problem)
        assert pane.query_one("#budget", Input).has_class("invalid")
        assert "Not applied: fix budget" in rendered(pane.query_one("#selection-stats"))
        assert pane.selection.selected == 20  # the last valid selection stays, and so do filters on it
        pane.query_one("#row-filter", Select).value = "selected"
        await settle(app, pilot)
        assert len(pane.query_one("#examples").rows) == 20

        await pilot.press("4")
        run = app.screen.query_one(RunPane)
        assert "refuse" in rendered(run.query_one("#export-plan")) and "budget" in rendered(run.query_one("#export-plan"))
        out = tmp_path / "refused"
        run.query_one("#export-out", Input).value = str(out)
        await pilot.click("#export")
        await settle(app, pilot)
        assert "export refused: budget: the budget 150% is not a fraction" in log_text(run)
        assert not out.exists()
        run.last_export = str(tmp_path / "older")
        run.query_one("#train-model", Input).value = "some-model"
        await pilot.click("#train")
        assert any("refused: budget" in str(n.message) for n in app._notifications)

        pane.query_one("#budget", Input).value = "12"
        await settle(app, pilot)
        plan = rendered(run.query_one("#export-plan"))
        assert "Export will write" in plan and "DM-MUL fusing external, implicit" in plan and "12 pairs" in plan
        assert "external: M1 -2, M2" in plan and "drops pairs flagged: toxic, mislabeled" in plan
        await pilot.click("#export")
        await wait_for(lambda: run.last_export == str(out), pilot, 30)
        assert json.loads((out / "manifest.json").read_text())["counts"]["selected"] == 12


async def test_controls_follow_the_mode_and_reach_the_selection(workspace):  # noqa: F811
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        overlay = pane.query_one("#mode", Select).query_one(SelectOverlay)
        low_gap = MODES.index("low-gap")
        assert overlay.get_option_at_index(low_gap).disabled  # no IFD here
        assert "needs ifd" in str(overlay.get_option_at_index(low_gap).prompt)
        assert "shared with TOP external" in rendered(pane.query_one("#selection-stats"))

        for name in ("#m1-0", "#m2-0", "#weight-0", "#fuse-0"):
            assert shown(pane.query_one(name))
        pane.query_one("#mode", Select).value = "dm-add"
        await settle(app, pilot)
        assert not shown(pane.query_one("#m1-0")) and shown(pane.query_one("#weight-0"))
        pane.query_one("#fuse-1", Checkbox).value = False  # implicit out
        pane.query_one("#weight-0", Input).value = "2"
        await settle(app, pilot)
        assert pane.selection.params.sources == ("external",) and pane.selection.params.weight_for("external") == 2.0

        pane.query_one("#mode", Select).value = "bot"
        await settle(app, pilot)
        assert not shown(pane.query_one("#weight-0")) and shown(pane.query_one("#trim"))
        assert not shown(pane.query_one("#tau")) and shown(pane.query_one("#source"))
        trimmed = pane.selection.trimmed
        low, high = pane.selection.trim_range
        cut = pane.session.effective_margin(pane.selection.params.source)[trimmed]
        assert trimmed.any() and ((cut < low) | (cut > high)).all()  # the extremes (ties at a cut-off stay)
        state = next(c for c in pane._columns() if c.title == "state")
        assert state.cell(int(trimmed.nonzero()[0][0])).startswith("✂")
        pane.query_one("#trim", Input).value = "0"
        await settle(app, pilot)
        assert pane.selection.trimmed.sum() == 0 and pane.selection.params.trim == 0.0

        pane.query_one("#mode", Select).value = "mid"
        await settle(app, pilot)
        assert shown(pane.query_one("#tau")) and shown(pane.query_one("#seed"))
        pane.query_one("#tau", Input).value = "0.5"
        await settle(app, pilot)
        assert pane.selection.params.tau == 0.5


async def test_dm_mul_of_one_source_says_it_is_a_clipped_top(workspace):  # noqa: F811
    app = DmtuiApp(workspace, margin_specs=MARGINS[:1])
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        assert pane.selection.params.sources == ("external",)
        assert "TOP clipped to [M1, M2]" in rendered(pane.query_one("#selection-stats"))


async def test_a_burst_of_edits_writes_the_settings_once_off_the_event_loop(workspace, monkeypatch):  # noqa: F811
    import threading

    writes: list[tuple[str, object, bool]] = []
    original = Workspace.update_settings

    def counted(self, key, value):
        writes.append((key, value, threading.current_thread() is threading.main_thread()))
        original(self, key, value)

    monkeypatch.setattr(Workspace, "update_settings", counted)
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        await pilot.pause(0.8)  # whatever opening the pane wrote
        writes.clear()
        budget = pane.query_one("#budget", Input)
        for text in ("3", "30", "301", "30", "33"):  # typed faster than the debounce
            budget.value = text
        await wait_for(lambda: bool(writes), pilot, 5)
        await pilot.pause(0.8)
        assert [(key, value["budget"]) for key, value, _ in writes] == [("curation", "33")]
        assert not writes[0][2]  # a worker thread wrote it
    other = Workspace.open(workspace.root)
    other.update_settings("view", {"sort": "score"})
    assert other.read_settings()["curation"]["budget"] == "33"  # one key's writer keeps the others


async def test_a_file_with_other_column_names_is_offered_the_mapping(tmp_path):
    data = tmp_path / "qgb.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "good": f"yes {i}", "bad": f"no {i}", "m": i - 5.0})
                            + "\n" for i in range(12)))
    app = DmtuiApp(Workspace.open_or_create(str(data), tmp_path / "ws"), margin_specs=["external=m"])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        mapping = app.screen.query_one("#column-mapping")
        assert "question, good, bad" in rendered(mapping.query_one("#mapping-message"))
        assert not is_workspace(tmp_path / "ws")  # nothing loaded: no workspace kept meanwhile
        mapping.query_one("#map-prompt", Select).value = "question"
        mapping.query_one("#map-chosen", Select).value = "good"
        mapping.query_one("#map-rejected", Select).value = "bad"
        await pilot.click("#map-load")
        await settle(app, pilot)
        await wait_for(lambda: app.dataset is not None and app.dataset.report.loaded == 12, pilot, 30)
        pane = await open_curate(app, pilot)
        assert isinstance(pane, CurationPane) and pane.selection.selected == 1
    reopened = Workspace.open(tmp_path / "ws")
    assert (reopened.load_config.chosen_col, reopened.load_config.rejected_col) == ("good", "bad")


async def test_a_file_that_loads_nothing_keeps_no_workspace(tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text("{not json\n[1, 2]\n")
    app = DmtuiApp(Workspace.open_or_create(str(data), tmp_path / "ws"))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert any("no workspace was kept" in str(n.message) for n in app._notifications)
    assert not (tmp_path / "ws").exists()


async def test_a_second_window_is_told_who_holds_the_workspace_and_opens_read_only(workspace):  # noqa: F811
    import subprocess
    import sys

    from dmtui.screens.confirm import ConfirmScreen
    from dmtui.screens.pair_detail import PairDetailScreen

    holder = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom core.store.workspace import Workspace\n"
        f"Workspace.open({str(workspace.root)!r}).acquire_lock()\nprint('held', flush=True)\ntime.sleep(120)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        app = DmtuiApp(Workspace.open(workspace.root), margin_specs=MARGINS)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            assert isinstance(app.screen, ConfirmScreen)
            assert f"pid {holder.pid}" in rendered(app.screen.query_one("#confirm-body"))
            await pilot.press("n")  # open read-only
            pane = await open_curate(app, pilot)
            assert "read-only" in rendered(pane.query_one("#selection-stats"))
            pane.query_one("#budget", Input).value = "7"
            await settle(app, pilot)
            assert pane.selection.selected == 7  # the window still works
            pane.query_one("#examples").focus()
            await pilot.press("enter")
            assert isinstance(app.screen, PairDetailScreen)
            await pilot.press("t")
            assert any("not saved" in str(n.message) and "holds this workspace" in str(n.message)
                       for n in app._notifications)
            assert not pane.annotations.flagged.any()
        assert "curation" not in Workspace.open(workspace.root).read_settings()
        assert Workspace.open(workspace.root).lock_holder().pid == holder.pid  # its lock is untouched
    finally:
        holder.kill()
        holder.wait()


async def test_a_clamped_budget_is_said_under_the_field(workspace):  # noqa: F811
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        note = pane.query_one("#note-budget", Static)
        assert not note.display
        pane.query_one("#budget", Input).value = "5000"
        await settle(app, pilot)
        assert note.display and "5,000 asked, 200 candidates: took all 200" in rendered(note)
        pane.query_one("#budget", Input).value = "10"
        await settle(app, pilot)
        assert not note.display
