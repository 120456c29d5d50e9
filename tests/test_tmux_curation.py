"""Issue 15's walk in a real terminal (tmux): an invalid budget refuses Export with the
reason; a selected pair flagged toxic in the app is left out of `dmtui export
--drop-flagged toxic`, which lists it with its flag.

Skipped where tmux is not installed (`apt-get install tmux`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from test_tmux_layout import capture, dataset  # noqa: F401 - the fixture

from core.store.annotations import AnnotationStore
from core.store.workspace import Workspace

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
MARGINS = ["--margin", "external=sc,sr", "--margin", "implicit=im"]


def keys(session: str, *sent: str) -> None:
    """One key at a time, as a person types (a burst of keys into a field is issue 16's, not this walk's)."""
    for key in sent:
        subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)
        time.sleep(0.5)


def wait_for_screen(session: str, predicate, what: str, seconds: float = 60) -> list[str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        screen = capture(session)
        if predicate("\n".join(screen)):
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{what} never showed:\n" + "\n".join(capture(session)))


def clear_budget(session: str) -> None:
    """m (the selection controls), Tab (the budget), Ctrl+U (clear it)."""
    keys(session, "m", "Tab", "C-u")
    wait_for_screen(session, lambda text: "cannot read the budget ''" in text, "the empty budget field", 10)


def test_invalid_budget_refuses_export_and_a_flagged_pair_is_dropped(dataset, tmp_path):  # noqa: F811
    session = f"dmtui-{uuid.uuid4().hex[:8]}"
    workspace_root = dataset.with_suffix(".dmtui")
    command = f"env -u COLUMNS -u LINES {sys.executable} -m dmtui open {dataset} {' '.join(MARGINS)}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "36", command], check=True)
    try:
        wait_for_screen(session, lambda text: "Rejected rows: 1" in text, "the load report")
        keys(session, "2")
        wait_for_screen(session, lambda text: "Examples:" in text and "selected" in text, "the Curate tab")
        clear_budget(session)
        keys(session, *"150%")
        wait_for_screen(session, lambda text: "150% is not a fraction" in text, "the budget's reason, inline")
        keys(session, "Escape", "E")
        wait_for_screen(session, lambda text: "Export refused" in text and "budget" in text, "the refusal")

        clear_budget(session)
        keys(session, *"12", "Escape")
        wait_for_screen(session, lambda text: "12 of 300 selected" in text, "the fixed selection")
        keys(session, "Enter")
        wait_for_screen(session, lambda text: "flags:" in text and "selected" in text, "the pair view")
        keys(session, "t")
        wait_for_screen(session, lambda text: "flags: toxic" in text, "the flag")
        keys(session, "Escape")
        wait_for_screen(session, lambda text: "flagged, selected: toxic 1" in text, "the flag warning in Curate")
        time.sleep(1.0)  # the debounced settings write (budget 12)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)

    with AnnotationStore(Workspace.open(workspace_root).annotations_path) as store:
        (flagged,) = [a.pair_id for a in store.all().values() if a.flags == ("toxic",)]
    out = tmp_path / "export"
    result = subprocess.run([sys.executable, "-m", "dmtui", "export", str(workspace_root), "--drop-flagged", "toxic",
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "budget 12 (workspace)" in result.stdout  # the app's selection, followed
    assert f"dropped 1 flagged pairs: {flagged} (toxic)" in result.stdout
    written = [json.loads(line)["pair_id"] for line in (out / "data.jsonl").read_text().splitlines()]
    assert flagged not in written and len(written) == 11
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export"]["dropped_pair_ids"] == [flagged]
    assert manifest["annotations"]["flags"][flagged] == ["toxic"]
