"""`dmtui` without a dataset: the launcher's recent list, path completion, browser and demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

from app_pilot import settle, wait_for
from textual.widgets import DataTable, Input

from core.store.recent import recent_workspaces, remember_workspace
from core.store.workspace import Workspace
from dmtui.app import DmtuiApp
from dmtui.screens.dataset import DatasetScreen
from dmtui.screens.launcher import DataTree, LauncherScreen, ago

ROWS = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(12)]


def dataset(folder: Path, name: str = "prefs.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


async def shown(pilot) -> None:
    """Let the launcher draw. (Not `settle`: the directory browser's loader worker never completes.)"""
    await pilot.pause()
    await pilot.pause(0.2)


def cell_text(table: DataTable, row: int, column: int) -> str:
    return str(table.get_row_at(row)[column])


async def test_recent_workspaces_show_what_they_hold_and_enter_opens_one(tmp_path):
    data = dataset(tmp_path)
    workspace = Workspace.open_or_create(str(data), tmp_path / "ws")
    workspace.load()  # caches the report the launcher reads the pair count from
    (workspace.scores_dir / "external" / "fp").mkdir(parents=True)
    (workspace.scores_dir / "external" / "fp" / "part-r0000-000000.parquet").write_bytes(b"")
    remember_workspace(workspace.root, now=time.time() - 7200)
    remember_workspace(tmp_path / "gone", now=time.time() - 60)
    app = DmtuiApp(start_folder=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        assert isinstance(app.screen, LauncherScreen)
        table = app.screen.query_one("#recent", DataTable)
        assert table.row_count == 2
        assert "no longer a workspace" in cell_text(table, 0, 4)  # newest first, its problem said
        assert [cell_text(table, 1, c) for c in range(4)] == ["prefs.jsonl", "12", "external", "2 h ago"]
        await pilot.press("enter")  # the gone one: an error, no crash
        assert "no longer a workspace" in str(app.screen.query_one("#launcher-error").render())
        await pilot.press("down", "enter")
        await wait_for(lambda: isinstance(app.screen, DatasetScreen), pilot, 30)
        assert app.workspace.root == workspace.root
    assert recent_workspaces()[0].root == workspace.root.resolve()


async def test_a_typed_path_completes_with_tab_and_enter_opens_it(tmp_path):
    data = dataset(tmp_path, "preferences-v2.jsonl")
    app = DmtuiApp(start_folder=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        field = app.screen.query_one("#path", Input)
        await pilot.press("p", *str(tmp_path / "pref"))  # p: into the path field
        await pilot.pause(0.3)
        await pilot.press("tab")
        assert field.value == str(data)
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, DatasetScreen), pilot, 30)
        await settle(app, pilot)
        assert app.dataset is not None and app.dataset.report.loaded == 12
    assert (tmp_path / "preferences-v2.dmtui").is_dir()  # its workspace, next to it


async def test_a_path_that_does_not_load_says_why(tmp_path):
    app = DmtuiApp(start_folder=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        app.screen.query_one("#path", Input).value = str(tmp_path / "missing.jsonl")
        await pilot.press("p", "enter")
        await wait_for(lambda: "Opening" not in str(app.screen.query_one("#launcher-error").render()), pilot, 10)
        assert isinstance(app.screen, LauncherScreen)
        assert "no such file" in str(app.screen.query_one("#launcher-error").render())


async def test_the_browser_lists_data_files_and_opens_one_on_enter(tmp_path):
    (tmp_path / "sub").mkdir()
    dataset(tmp_path / "sub")
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / ".hidden.jsonl").write_text("")
    app = DmtuiApp(start_folder=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        browser = app.screen.query_one(DataTree)
        assert {p.name for p in browser.filter_paths(tmp_path.iterdir())} == {"sub"}
        assert {p.name for p in browser.filter_paths((tmp_path / "sub").iterdir())} == {"prefs.jsonl"}
        browser.focus()
        await wait_for(lambda: browser.root.children, pilot, 10)
        await pilot.press("down", "enter")  # expand sub/
        await wait_for(lambda: len(browser.root.children[0].children) == 1, pilot, 10)
        await pilot.press("down", "enter")
        await wait_for(lambda: isinstance(app.screen, DatasetScreen), pilot, 30)
        assert Path(app.workspace.dataset.source).name == "prefs.jsonl"


async def test_d_opens_the_demo_with_its_models(tmp_path, monkeypatch):
    opened = {}
    monkeypatch.setattr(DmtuiApp, "open_workspace", lambda self, workspace, demo=False, specs=None:
                        opened.update(source=workspace.dataset.source, demo=demo))
    app = DmtuiApp(start_folder=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        await pilot.press("d")  # the first screen as it comes: no recent workspace, focus untouched
        await wait_for(lambda: bool(opened), pilot, 60)
        assert app.screen.query_one("#path", Input).value == ""
    assert opened["source"].endswith("sample_data/demo/pairs.jsonl") and opened["demo"] is True


async def test_q_quits_from_the_first_screen(tmp_path):
    app = DmtuiApp(start_folder=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await shown(pilot)
        await pilot.press("q")
        await wait_for(lambda: app.return_code is not None, pilot, 10)
    assert app.return_code == 0


def test_ago_reads_like_a_person_would_say_it():
    assert [ago(s) for s in (5, 120, 7200, 3 * 86400)] == ["just now", "2 min ago", "2 h ago", "3 d ago"]


async def test_the_palette_offers_no_workspace_action_before_a_workspace_is_open(tmp_path):
    """Ctrl+P on the launcher: the workspace's actions (score, export, ...) act on a main
    screen that does not exist yet; choosing one crashed the app."""
    app = DmtuiApp(start_folder=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await shown(pilot)
        await pilot.press("ctrl+p", *"start scoring")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.2)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert isinstance(app.screen, LauncherScreen)
