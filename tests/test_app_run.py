"""The Run tab: export through the engine's manifest, then train in a subprocess and stop it."""

from __future__ import annotations

import asyncio
import json
import re

from app_pilot import open_curate, settle, wait_for
from test_app_curation import MARGINS
from test_app_curation import workspace as workspace  # noqa: F401 - the fixture
from test_curation import run_cli
from textual.widgets import Checkbox, Input, RichLog, Select

from core.export.exporter import rebuild_from_manifest
from core.store.annotations import FLAGS, AnnotationStore
from core.store.workspace import Workspace
from dmtui.app import DmtuiApp
from dmtui.screens.confirm import ConfirmScreen
from dmtui.widgets.run_pane import RunPane


def log_text(pane: RunPane) -> str:
    return "\n".join(line.text for line in pane.query_one("#run-log", RichLog).lines)


async def test_export_from_the_app_matches_the_cli_rebuild(workspace, tmp_path):  # noqa: F811
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        curation = await open_curate(app, pilot)
        await pilot.press("4")
        run = app.screen.query_one(RunPane)
        out = tmp_path / "app-export"
        run.query_one("#export-out", Input).value = str(out)
        await pilot.click("#export")
        await settle(app, pilot)
        await wait_for(lambda: run.last_export is not None, pilot, 30)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["counts"]["selected"] == curation.selection.selected
        assert "exported" in log_text(run)
    rebuilt = rebuild_from_manifest(out / "manifest.json", tmp_path / "rebuilt")
    assert rebuilt["selected_pair_ids"] == manifest["selected_pair_ids"]
    assert (out / "data.jsonl").read_bytes() == (tmp_path / "rebuilt" / "data.jsonl").read_bytes()


async def test_the_apps_export_is_what_dmtui_export_writes_for_the_workspace(workspace, tmp_path):  # noqa: F811
    """Issue 15 items 1-2 (review 1 item 12): choices made in the app (mode, budget, a
    weight, the flags to drop) and the curator's annotations reach `dmtui export WORKSPACE`
    with no option given: it writes the same bytes as the app's Export."""
    workspace.update_settings("margins", MARGINS)  # what `dmtui open DATA --margin ...` remembers
    pairs = workspace.load().pairs["pair_id"].to_pylist()
    with AnnotationStore(workspace.annotations_path) as store:
        for index, flags in ((0, ("toxic",)), (1, ("other",)), (2, ("mislabeled",)), (3, ())):
            store.update(pairs[index], flags=flags, swapped=index >= 2, note=f"note {index}")
    app = DmtuiApp(workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        curation = await open_curate(app, pilot)
        curation.query_one("#mode", Select).value = "dm-add"
        curation.query_one("#budget", Input).value = "60%"
        curation.query_one(f"#weight-{curation.sources.index('implicit')}", Input).value = "0.5"
        await settle(app, pilot)
        await pilot.press("4")
        run = app.screen.query_one(RunPane)
        drop = {flag: str(run.query_one(f"#drop-{flag}", Checkbox).render()) for flag in FLAGS}
        assert "✓" in drop["toxic"] and "✓" in drop["mislabeled"] and "✓" not in drop["other"]  # not colour alone
        assert all("✓" in str(box.render()) for box in curation.query(".fuse-name").results(Checkbox))
        run.query_one("#drop-other", Checkbox).value = True
        out = tmp_path / "app-export"
        run.query_one("#export-out", Input).value = str(out)
        await settle(app, pilot)
        await pilot.click("#export")
        await settle(app, pilot)
        await wait_for(lambda: run.last_export is not None, pilot, 30)
    app_manifest = json.loads((out / "manifest.json").read_text())
    params = app_manifest["selection"]["params"]
    assert (params["mode"], params["budget"], params["weights"]) == ("dm-add", 0.6, {"implicit": 0.5})
    assert app_manifest["export"]["drop_flagged"] == ["toxic", "mislabeled", "other"]
    assert app_manifest["counts"]["dropped_flagged"] >= 1 and app_manifest["counts"]["swapped_selected"] >= 1

    cli = run_cli("export", workspace.root, "--out", tmp_path / "cli-export")
    assert cli.returncode == 0, cli.stderr
    assert "mode DM-ADD (workspace)" in cli.stdout and "budget 60% (workspace)" in cli.stdout
    cli_manifest = json.loads((tmp_path / "cli-export" / "manifest.json").read_text())
    for part in (("selected_pair_ids",), ("selection", "params"), ("export",), ("annotations",), ("counts",)):
        assert _at(cli_manifest, part) == _at(app_manifest, part), part
    for name in ("data.jsonl", "annotations.jsonl"):
        assert (tmp_path / "cli-export" / name).read_bytes() == (out / name).read_bytes(), name


def _at(mapping: dict, path: tuple[str, ...]):
    for key in path:
        mapping = mapping[key]
    return mapping


async def test_training_runs_in_a_subprocess_streams_curves_and_stops(workspace, tmp_path, demo_models):  # noqa: F811
    app = DmtuiApp(Workspace.open(workspace.root), margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_curate(app, pilot)
        await pilot.press("T")  # from the Curate tab: the Run tab was never shown
        assert any("export a selection first" in str(n.message) for n in app._notifications)
        run = app.screen.query_one(RunPane)
        run.query_one("#export-out", Input).value = str(tmp_path / "export")
        await pilot.press("E")  # from the Curate tab: exports without visiting Run
        await wait_for(lambda: run.last_export is not None, pilot, 30)
        run.query_one("#train-model", Input).value = str(demo_models.policy)
        run.query_one("#train-args", Input).value = (  # far more steps than the test waits for: it must stop the run
            "--epochs 5000 --lr 1e-3 --batch-size 4 --per-device-batch-size 4 --logging-steps 1 "
            "--save-steps 1000 --no-gradient-checkpointing"
        )
        await pilot.press("T")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        body = str(app.screen.query_one("#confirm-body").render())
        assert str(demo_models.policy) in body and "dpo" in body and "0.001" in body and "about" in body
        await pilot.press("enter")
        await wait_for(lambda: len(run.history["loss"][1]) >= 2, pilot)
        assert run.running
        await pilot.press("escape")  # Esc never stops work
        assert run.running
        asking = lambda: isinstance(app.screen, ConfirmScreen)  # noqa: E731
        await pilot.press("X")  # asks before stopping a training run
        await wait_for(asking, pilot, 10)
        await pilot.press("n")
        await wait_for(lambda: not asking(), pilot, 10)
        assert run.running
        await pilot.press("X")
        await wait_for(asking, pilot, 10)  # a "y" before the question shows would be lost
        await pilot.press("y")  # stops the subprocess cleanly
        await wait_for(lambda: not run.running, pilot)
        await wait_for(lambda: "exited with code 130" in log_text(run), pilot, 60, lambda: log_text(run))
        text = log_text(run)
        assert "stopped at step" in text and "checkpoint" in text, text
        assert re.search(r"step \d+/\d+  loss \d\.\d+", text), text  # 4 significant digits, not 16
        assert run.history["reward_margin"][1]
        await asyncio.sleep(0)
    checkpoints = list((workspace.root / "runs").glob("run-*/checkpoints/checkpoint-*"))
    assert checkpoints, "a stopped run keeps a checkpoint to resume from"
