"""Faults: kill -9 at random moments, a full disk and a read-only workspace.

The kill trials (tests/faults.py) run the real commands in subprocesses: a few per kind in
CI and 20 per kind with ``pytest -m slow tests/test_faults.py`` (bench/fault_trials.py runs
the same trials for the README's table). A full disk and a read-only workspace must give a
clear error that names the file and says what to do, and leave every existing file as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from app_pilot import open_curate, settle, wait_for
from faults import (
    AnnotationScenario,
    ExportScenario,
    ScoreStoreScenario,
    ScoringScenario,
    TrainingScenario,
    check_tree,
    dmtui,
    margin_rows,
    read_scores,
    run_trial,
    verify_export,
)
from test_app_curation import MARGINS as APP_MARGINS
from test_app_curation import workspace as workspace  # noqa: F401 - the app tests' workspace fixture

import core.io.atomic as atomic_module
from core.errors import WorkspaceError
from core.io.atomic import atomic_write_json, disk_failure
from core.store.annotations import AnnotationStore

REPO_ROOT = Path(__file__).resolve().parent.parent
MARGINS = ["--margin", "external=score_chosen,score_rejected", "--margin", "implicit=implicit_m"]

# --- kill -9 at random moments ----------------------------------------------------------

CI_TRIALS = {"scoring": 2, "score_checkpoints": 3, "export": 3, "annotations": 3, "training": 2}
SLOW_TRIALS = 20
SLOW_SEEDS = range(100, 100 + SLOW_TRIALS)
CI_KILLS, SLOW_KILLS = 1, 2
"""Kills per trial before the command is let finish."""

TRIALS = [pytest.param(kind, seed, id=f"{kind}-{seed}") for kind, n in CI_TRIALS.items() for seed in range(n)] + [
    pytest.param(kind, seed, id=f"{kind}-{seed}", marks=pytest.mark.slow) for kind in CI_TRIALS for seed in SLOW_SEEDS]


@pytest.fixture(scope="module")
def scoring(tmp_path_factory, demo_models) -> ScoringScenario:
    scenario = ScoringScenario(tmp_path_factory.mktemp("scoring"), demo_models)
    scenario.measure()
    return scenario


@pytest.fixture(scope="module")
def score_checkpoints(tmp_path_factory) -> ScoreStoreScenario:
    scenario = ScoreStoreScenario(tmp_path_factory.mktemp("store"))
    scenario.measure(runs=2)
    return scenario


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> ExportScenario:
    scenario = ExportScenario(tmp_path_factory.mktemp("export"))
    scenario.measure(runs=2)
    return scenario


@pytest.fixture(scope="module")
def annotations(tmp_path_factory) -> AnnotationScenario:
    scenario = AnnotationScenario(tmp_path_factory.mktemp("annotations"), updates=2000)
    scenario.measure(runs=2)
    return scenario


@pytest.fixture(scope="module")
def training(tmp_path_factory, demo_models) -> TrainingScenario:
    scenario = TrainingScenario(tmp_path_factory.mktemp("training"), demo_models)
    scenario.measure()
    return scenario


@pytest.mark.parametrize(("kind", "seed"), TRIALS)
def test_killed_at_random_and_rerun_loses_nothing(kind, seed, request):
    scenario = request.getfixturevalue(kind)
    if seed in SLOW_SEEDS:
        trial = run_trial(scenario, seed, SLOW_KILLS)
    else:  # kills early in the run, so that each CI trial is sure to kill something
        trial = run_trial(scenario, seed, CI_KILLS, window=0.6)
        assert trial.kills >= 1, trial
    assert trial.lost == [], trial


# The checks themselves: each catches the damage it is there for.


def test_checks_catch_half_written_files(tmp_path):
    (tmp_path / "ok.json").write_text('{"a": 1}')
    (tmp_path / "cut.json").write_text('{"a": ')
    (tmp_path / "cut.jsonl").write_text('{"a": 1}\n{"a"')
    (tmp_path / "cut.parquet").write_bytes(b"PAR1\x00\x00")
    (tmp_path / ".ok.json.0123abcd-42-x1y2.tmp").write_text("{")
    (tmp_path / ".stray").write_text("")
    damaged, temps = check_tree(tmp_path)
    assert sorted(Path(line.split(":")[0]).name for line in damaged) == [".stray", "cut.json", "cut.jsonl",
                                                                        "cut.parquet"]
    assert temps == 1


def test_checks_catch_lost_scores(scoring, tmp_path):
    """A score part removed after a kill is reported as lost scores."""
    import shutil

    from faults import Trial

    folder = tmp_path / "trial"
    shutil.copytree(scoring.work / "reference", folder)
    scoring.prepare(folder)
    trial = Trial("scoring", 0)
    scoring.after_kill(folder, trial)
    assert trial.lost == []
    next(folder.glob("ws/scores/implicit/*/part-*.parquet")).unlink()
    scoring.after_kill(folder, trial)
    assert trial.lost and "gone or changed" in trial.lost[0]


def test_checks_catch_a_damaged_export(export, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(export.work / "reference" / "out", out)
    assert verify_export(out) == (export.reference_sha, None)
    data = out / "data.jsonl"
    data.write_bytes(data.read_bytes()[:-100])
    assert verify_export(out)[1] is not None


# --- a full disk and a read-only workspace, in the engine ---------------------------------


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "the disk is full"),
    (errno.EDQUOT, "quota"),
    (errno.EFBIG, "file size limit"),
    (errno.EROFS, "read-only"),
    (errno.EACCES, "permission denied"),
])
@pytest.mark.parametrize("where", ["create", "flush"])
def test_a_refused_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, code, words, where):
    target = tmp_path / "settings.json"
    atomic_write_json(target, {"kept": True})

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if where == "create":
        monkeypatch.setattr(atomic_module.tempfile, "mkstemp", refuse)
    else:
        monkeypatch.setattr(atomic_module.os, "fsync", refuse)
    with pytest.raises(WorkspaceError) as refused:
        atomic_write_json(target, {"kept": False})
    assert str(target) in refused.value.message and words in refused.value.message
    assert refused.value.hint
    assert json.loads(target.read_text()) == {"kept": True}
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]  # no temp left


def test_other_failures_are_not_passed_off_as_disk_problems(tmp_path):
    assert disk_failure(tmp_path, OSError(errno.EIO, "Input/output error")) is None
    assert disk_failure(tmp_path, ValueError("Permission denied")) is None
    model_unreadable = PermissionError(errno.EACCES, "Permission denied", "/models/pi0/config.json")
    assert disk_failure(tmp_path / "run", model_unreadable) is None  # a read elsewhere, not our write


def test_disk_problems_are_found_in_library_messages_and_the_file_system(tmp_path, monkeypatch):
    safetensors_style = RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert "disk is full" in disk_failure(tmp_path, safetensors_style).message
    torch_style = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert disk_failure(tmp_path, torch_style) is None  # the disk has room: not a disk problem

    real = os.statvfs(tmp_path)
    read_only = os.statvfs_result((*real[:8], real.f_flag | os.ST_RDONLY, real.f_namemax))
    monkeypatch.setattr(atomic_module.os, "statvfs", lambda path: read_only)
    assert "read-only" in disk_failure(tmp_path, torch_style).message
    out_of_memory = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert disk_failure(tmp_path, out_of_memory) is None  # its own message, even on a read-only disk


def test_an_annotation_sqlite_refuses_keeps_the_database_whole(tmp_path):
    db = tmp_path / "annotations.sqlite"
    with AnnotationStore(db) as store:
        store.update("p1", flags=("toxic",))
        pages = store.connection.execute("PRAGMA page_count").fetchone()[0]
        store.connection.execute(f"PRAGMA max_page_count = {pages}")  # the database may not grow: "full"
        with pytest.raises(WorkspaceError) as refused:
            store.update("p2", note="x" * 100_000)
        assert str(db) in refused.value.message and "full" in refused.value.message
        assert "not saved" in refused.value.hint
        assert store.update("p1", excluded=True).excluded  # the store still works
    with AnnotationStore(db) as store:
        assert store.get("p2").is_blank and store.get("p1").flags == ("toxic",)
        assert store.connection.execute("SELECT COUNT(*) FROM history").fetchone()[0] == 2
        assert store.connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --- the command line on a full disk and a read-only workspace ----------------------------


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """A command, with files it writes limited to `limit_bytes` (writes beyond fail with EFBIG,
    which is how a full disk looks to the writer; works as root, unlike a chmod)."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size if limit_bytes is not None else None)


@pytest.fixture
def margin_data(tmp_path) -> Path:
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(margin_rows(3000)) + "\n")
    return data


def assert_clear_failure(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "error:" in result.stderr and "hint:" in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_cli_export_on_a_full_disk_keeps_the_old_export(margin_data, tmp_path):
    out = tmp_path / "out"
    assert run_cli(dmtui("export", margin_data, *MARGINS, "--budget", "5%", "--out", out)).returncode == 0
    before = tree_digest(out)
    result = run_cli(dmtui("export", margin_data, *MARGINS, "--budget", "90%", "--out", out, "--force"),
                     limit_bytes=100_000)
    assert_clear_failure(result, f"cannot write {out}", "file size limit")
    assert tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_score_on_a_full_disk_keeps_every_score(scoring, tmp_path):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(scoring.work / "reference" / "ws", ws)
    shutil.rmtree(ws / "scores" / "implicit")  # left to score: its first write hits the limit
    before, scores = tree_digest(ws), read_scores(ws)
    result = run_cli(dmtui("score", ws, *scoring.options), limit_bytes=64)
    assert_clear_failure(result, f"cannot write {ws / 'scores' / 'implicit'}", "file size limit")
    assert tree_digest(ws) == before and read_scores(ws) == scores
    assert check_tree(ws) == ([], 0)


@pytest.mark.slow
def test_cli_train_on_a_full_disk_says_so(demo_models, tmp_path):
    from faults import tiny_export

    run = tmp_path / "run"
    result = run_cli(dmtui("train", tiny_export(tmp_path), "--out", run, "--model", demo_models.policy,
                           "--batch-size", "2", "--per-device-batch-size", "2", "--max-steps", "3",
                           "--save-steps", "1", "--no-gradient-checkpointing"), limit_bytes=200_000)
    assert_clear_failure(result, f"cannot write {run}", "file size limit")
    assert json.loads((run / "run.json").read_text())["config"]["max_steps"] == 3  # what was written is whole


@contextmanager
def read_only(folder: Path):
    """Yields a function that makes a command see `folder` read-only: for root (whom a chmod
    does not stop) a read-only bind mount in a private mount namespace, else a chmod."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for path in modes:
            path.chmod(modes[path] & ~0o222)
        try:
            yield lambda argv: argv
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    try:
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    except FileNotFoundError:
        probe = None
    if probe is None or probe.returncode != 0:
        pytest.skip("running as root without `unshare -m`: no way to make a folder read-only here")
    remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    yield lambda argv: ["unshare", "-m", "sh", "-c", remount, str(folder), *map(str, argv)]


def test_cli_on_a_read_only_workspace_says_so_and_changes_nothing(margin_data, tmp_path):
    from core.store.workspace import Workspace

    ws = Workspace.create(tmp_path / "ws", str(margin_data))
    ws.load()
    with AnnotationStore(ws.annotations_path) as store:
        store.update("p1", flags=("toxic",))
    before = tree_digest(ws.root)
    out = ws.exports_dir / "subset"
    with read_only(ws.root) as command:
        export = run_cli(command(dmtui("export", ws.root, *MARGINS, "--out", out)))
        annotate = run_cli(command([sys.executable, "-c", (
            "import sys\nfrom core.store.annotations import AnnotationStore\nfrom core.errors import DmtuiError\n"
            f"try:\n    AnnotationStore({str(ws.annotations_path)!r}).update('p1', note='n')\n"
            "except DmtuiError as error:\n    sys.exit(str(error))")]))
    words = "read-only" if os.geteuid() == 0 else "permission denied"
    assert_clear_failure(export, f"cannot write {ws.root}", words)  # a cache of its margins, or `out`
    assert annotate.returncode == 1 and str(ws.annotations_path) in annotate.stderr, annotate.stderr
    assert "Traceback" not in annotate.stderr
    assert tree_digest(ws.root) == before and not out.exists()



# --- the app: a refused write is a notification, not a crash -----------------------------


async def test_app_reports_a_refused_annotation_and_export_and_keeps_running(workspace, monkeypatch, tmp_path):  # noqa: F811
    from textual.widgets import Input

    import core.export.exporter as export_module
    from dmtui.app import DmtuiApp
    from dmtui.screens.pair_detail import PairDetailScreen
    from dmtui.widgets.examples_table import ExamplesTable
    from dmtui.widgets.run_pane import RunPane

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def update_on_a_full_disk(store, pair_id, **changes):
        raise disk_failure(store.path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    def messages(app) -> str:
        return "\n".join(str(n.message) for n in app._notifications)

    app = DmtuiApp(workspace, margin_specs=APP_MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        pane.query_one(ExamplesTable).focus()
        await pilot.press("enter")
        flagged_before = pane.annotations.flagged.copy()
        monkeypatch.setattr(AnnotationStore, "update", update_on_a_full_disk)
        await pilot.press("t")
        assert isinstance(app.screen, PairDetailScreen)  # still running, still on the pair
        assert f"cannot write {workspace.annotations_path}: the disk is full" in messages(app)
        assert (pane.annotations.flagged == flagged_before).all()
        await pilot.press("escape")
        await settle(app, pilot)

        monkeypatch.setattr(export_module.tempfile, "mkdtemp", disk_full)
        await pilot.press("4")
        run = app.screen.query_one(RunPane)
        out = tmp_path / "app-export"
        run.query_one("#export-out", Input).value = str(out)
        await pilot.click("#export")
        await wait_for(lambda: f"cannot write {out}" in messages(app), pilot, 30)
        assert "the disk is full" in messages(app) and "bug" not in messages(app)
        assert not out.exists()
