"""The app in a real terminal (tmux) at 80x24 and 200x50: every part of the layout shows.

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

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def capture(session: str) -> list[str]:
    result = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True)
    return result.stdout.splitlines()


def wait_for_text(session: str, text: str, seconds: float = 60) -> list[str]:
    """The screen once `text` shows and the footer is drawn (the frame is complete)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        screen = capture(session)
        if any(text in line for line in screen) and screen and "palette" in screen[-1]:
            time.sleep(0.3)
            return capture(session)
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared:\n" + "\n".join(capture(session)))


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}",
             "sc": (i * 7) % 10, "sr": (i * 3) % 10, "im": ((i * 13) % 17) - 8.0} for i in range(300)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    return path


@pytest.mark.parametrize(("width", "height", "min_rows"), [(80, 24, 3), (200, 50, 15)])
def test_layout_holds_in_a_real_terminal(dataset, width, height, min_rows):
    session = f"dmtui-{uuid.uuid4().hex[:8]}"
    # COLUMNS / LINES (set by some runners) would override the real terminal size in Textual.
    command = (f"env -u COLUMNS -u LINES {sys.executable} -m dmtui open {dataset} "
               "--margin external=sc,sr --margin implicit=im")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), command],
                   check=True)
    try:
        screen = wait_for_text(session, "Rejected rows: 1")
        assert len(screen) == height and all(len(line) <= width for line in screen)
        assert all(tab in screen[1] for tab in ("Dataset", "Curate", "Score", "Run"))
        assert all(key in screen[-1] for key in ("Quit", "Help", "Score", "Export", "Train", "palette"))
        assert any("300 of 301 loaded" in line for line in screen)

        subprocess.run(["tmux", "send-keys", "-t", session, "2"], check=True)
        wait_for_text(session, "Open pair")  # the table has the keys (on a busy box a moment after the tab shows)
        screen = wait_for_text(session, "Examples:")
        assert any("selected" in line for line in screen)  # the selection counts
        header = next(i for i, line in enumerate(screen) if "pair_id" in line and "external" in line)
        rows = [line for line in screen[header + 1:] if "question" in line]
        assert len(rows) >= min_rows, "\n".join(screen)
        assert "Open pair" in screen[-1] and "palette" in screen[-1]
        assert any("external margin" in line for line in screen)  # the plot's title survives the width
        subprocess.run(["tmux", "send-keys", "-t", session, "v", "v", "v"], check=True)
        screen = wait_for_text(session, "x external")  # the scatter: its title and axis labels
        plot_rows = [line for line in screen if "┤" in line]
        assert len(plot_rows) >= 2 and any("M1" in line for line in screen)

        subprocess.run(["tmux", "send-keys", "-t", session, "3"], check=True)
        screen = wait_for_text(session, "reward model")
        assert any("Score" in line for line in screen[4:])

        subprocess.run(["tmux", "send-keys", "-t", session, "4"], check=True)
        screen = wait_for_text(session, "export to")
        assert any("Train" in line for line in screen)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_a_burst_of_keys_reaches_the_field_whole(dataset):
    """Keys sent in one go (as a paste or a fast typist does) all land where the key before
    them put the focus: `/` then a search with backspaces (its `q` does not quit the app),
    and `m`, Tab, a cleared budget and two digits (the digits switch no tab)."""
    session = f"dmtui-{uuid.uuid4().hex[:8]}"
    command = (f"env -u COLUMNS -u LINES {sys.executable} -m dmtui open {dataset} "
               "--margin external=sc,sr --margin implicit=im")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command], check=True)
    try:
        wait_for_text(session, "Rejected rows: 1")
        subprocess.run(["tmux", "send-keys", "-t", session, "2"], check=True)
        wait_for_text(session, "selected")
        subprocess.run(["tmux", "send-keys", "-t", session, "/", "q", "u", "e", "s", "t", "BSpace", "BSpace",
                        "BSpace", "e", "s", "t", "i", "o", "n", " ", "2", "9", "9"], check=True)
        screen = wait_for_text(session, "Examples: 1 shown")
        assert any("question 299" in line for line in screen), "\n".join(screen)
        subprocess.run(["tmux", "send-keys", "-t", session, "Escape"], check=True)
        time.sleep(1.0)  # alone: Escape with a key right behind it reads as Alt+key in any terminal
        subprocess.run(["tmux", "send-keys", "-t", session, "m", "Tab", "C-u", "4", "2"], check=True)
        screen = wait_for_text(session, "42 of 300 selected")
        assert any("Curate" in line for line in screen[:3])
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
