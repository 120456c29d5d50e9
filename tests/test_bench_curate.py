"""The Curate benches run end to end at a toy size and print each figure beside what it is
compared with in the same run (issue 17 item 4). The figures are read by people; here
only that every comparison is printed."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def run_bench(*arguments: str, timeout: float) -> str:
    result = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_bench_selection_prints_the_refresh_worker_beside_select():
    out = run_bench("bench/bench_selection.py", "--pairs", "20000", "--repeats", "2", timeout=120)
    assert re.search(r"refresh worker \(select \+ plots, memo kept\)\s+[\d.]+", out)
    assert re.search(r"refresh worker / select: [\d.]+x", out)
    assert re.search(r"keypress / 50 ms budget: [\d.]+", out)


@pytest.mark.slow  # a dozen processes, each importing the app: about a minute on a busy 2-core box
def test_bench_million_prints_each_app_figure_beside_its_reference(tmp_path):
    out = run_bench("bench/bench_million.py", "--pairs", "1500", "--edits", "2", "--work", str(tmp_path),
                    timeout=600)
    assert re.search(r"import / read_json = [\d.]+x", out)
    assert re.search(r"process start to first selection painted [\d.]+ s, CPU [\d.]+ s", out)
    assert re.search(r"refresh / select = [\d.]+x wall, [\d.]+x CPU", out)
    assert re.search(r"page-down wall median \d+ ms", out)
    assert re.search(r"load while measuring: [\d.]+-[\d.]+", out)
    again = run_bench("bench/bench_million.py", "--pairs", "1500", "--edits", "2", "--work", str(tmp_path),
                      "--keep", "--app-only", timeout=600)
    assert "first import" not in again and re.search(r"refresh / select = [\d.]+x wall", again)
