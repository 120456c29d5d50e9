"""The whole daily loop in a real terminal (tmux), keys only: the launcher opens a copy of
the demo world (`dmtui open --demo-models`, a path typed), S scores, E exports, T trains
(after its confirmation), q asks and y stops the training run and quits; then no process
of the app is left. Skipped where tmux is missing (`./dev test` installs it as root)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import pytest
from processes import alive, descendants

from core.demo.sample_data import DEMO_FILES, demo_dataset

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def keys(session: str, *pressed: str) -> None:
    """One key at a time: Escape followed at once by a letter reads as Alt+letter in a terminal."""
    for key in pressed:
        subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)
        time.sleep(0.3)


def wait_for(session: str, *texts: str, seconds: float = 120, any_of: bool = False) -> str:
    """The screen once all of `texts` show (or one of them, with `any_of`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        screen = capture(session)
        if (any if any_of else all)(text in screen for text in texts):
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{texts} never appeared:\n{capture(session)}")


def test_launcher_demo_score_export_train_quit_leaves_nothing(tmp_path, demo_cache_dir, demo_models):
    session = f"dmtui-flow-{uuid.uuid4().hex[:8]}"
    demo = tmp_path / "demo"  # a copy: the checkout's own demo workspace is left alone
    demo.mkdir()
    for name in DEMO_FILES:
        shutil.copyfile(demo_dataset().with_name(name), demo / name)
    workspace = demo / "pairs.dmtui"
    env = (f"env -u COLUMNS -u LINES DMTUI_STATE_DIR={tmp_path / 'state'} DMTUI_CACHE={demo_cache_dir} "
           f"HF_HUB_OFFLINE=1")
    command = f"cd {demo} && {env} {sys.executable} -m dmtui open --demo-models; echo DMTUI-EXITED $?; sleep 60"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command], check=True)
    shell = int(subprocess.run(["tmux", "display", "-p", "-t", session, "#{pane_pid}"],
                               capture_output=True, text=True).stdout)
    seen: set[int] = set()
    started = time.time()
    try:
        wait_for(session, "Open a dataset or a workspace", "pairs.jsonl")
        keys(session, "p")  # into the path field
        subprocess.run(["tmux", "send-keys", "-t", session, "-l", "pairs.jsonl"], check=True)
        keys(session, "Enter")
        wait_for(session, "1 Dataset", "loaded", "no scores yet")
        keys(session, "3")
        screen = wait_for(session, "reward model", "seed DPO")
        assert "demo-models" in screen  # the demo world's models are filled in
        for _ in range(12):  # Tab to the implicit checkbox (the focus bar shows where), Space unticks it
            try:
                wait_for(session, "▊✓▌ implicit", seconds=1.5)
                break
            except AssertionError:
                keys(session, "Tab")
        keys(session, "Space")
        wait_for(session, "▊ ▌ implicit")
        keys(session, "Escape", "S")  # out of the field, then score (external only: minutes faster)
        wait_for(session, "scoring…")
        seen |= descendants(shell)
        # The first checkpoint (1,000 pairs) is enough to curate; X stops there and keeps it.
        deadline = time.monotonic() + 600
        while not any(workspace.glob("scores/external/*/part-*.parquet")) and "done in" not in capture(session):
            assert time.monotonic() < deadline, capture(session)
            time.sleep(0.5)
        keys(session, "X")
        wait_for(session, "done in", "cancelled after", any_of=True)
        keys(session, "4")
        wait_for(session, "Export will write")
        for _ in range(20):  # the Curate tab recomputes on the new scores; Export refuses until it is done
            keys(session, "E")
            if "exported" in wait_for(session, "exported", "export refused", seconds=120, any_of=True):
                break
            time.sleep(1)
        wait_for(session, "exported")
        keys(session, "T")
        screen = wait_for(session, "Start training?", "lr", "steps")
        assert "1e-04" in screen or "0.0001" in screen  # the demo's rate, shown before anything starts
        keys(session, "y")
        # the log box is 4 lines: with long paths "started run" may already have scrolled away
        wait_for(session, "started run", "step 1/", seconds=120, any_of=True)
        seen |= descendants(shell)
        keys(session, "q")
        wait_for(session, "Stop the work and quit?", "training")
        keys(session, "y")
        wait_for(session, "DMTUI-EXITED 0", seconds=180)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert len(seen) >= 2, "the app and its child processes were seen while they ran"
    left = [pid for pid in seen if alive(pid)]
    assert not left, f"processes left behind: {left}"
    runs = sorted((workspace / "runs").glob("run-*"), key=lambda p: p.stat().st_mtime)
    assert runs and runs[-1].stat().st_mtime >= started and list(runs[-1].glob("checkpoints/checkpoint-*")), \
        "the stopped run keeps a checkpoint"
