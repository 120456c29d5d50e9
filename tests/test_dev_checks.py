"""`./dev test` lints and type-checks core/ before the whole suite (what CI runs), and stops
there when a check fails; a run of named test files skips the checks.

The script runs against a stand-in virtualenv whose python, ruff and mypy only log how they
were called (and fail on request), so this needs neither a real check nor a real test run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

STAND_IN = """#!/usr/bin/env bash
name="$(basename "$0")"
if [[ "$name" == python && "${1:-}" == -c ]]; then
    [[ "$2" == *hashlib* ]] && { cat >/dev/null; echo stand-in-hash; }
    exit 0
fi
echo "$name${*:+ $*}" >> "$DEV_LOG"
[[ "$name" == "${FAIL_TOOL:-}" ]] && exit 1
exit 0
"""


@pytest.fixture
def stand_in_venv(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "ruff", "mypy"):
        tool = bin_dir / name
        tool.write_text(STAND_IN)
        tool.chmod(0o755)
    return tmp_path / "venv"


def run_dev(venv: Path, *args: str, fail: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    if not all(shutil.which(tool) for tool in ("tmux", "chromium", "chromedriver")):
        pytest.skip("./dev test would install tmux/chromium first")
    log = venv / "calls.log"
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "DEV_LOG": str(log), "FAIL_TOOL": fail}
    result = subprocess.run([str(REPO / "dev"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, [call for call in calls if not call.startswith("python -m pip")]


def test_the_whole_suite_starts_with_ruff_and_mypy_on_core(stand_in_venv):
    result, calls = run_dev(stand_in_venv, "test", "-q")
    assert result.returncode == 0, result.stderr
    checks, tests = calls[:-1], calls[-1]
    assert {"ruff check core", "mypy"} <= set(checks)  # (and `ruff format --check core` once core is formatted)
    assert tests == "python -m pytest -q"


def test_a_failing_check_stops_the_run_before_the_tests(stand_in_venv):
    result, calls = run_dev(stand_in_venv, "test", "-q", fail="mypy")
    assert result.returncode != 0
    assert "mypy found type errors in core/" in result.stderr
    assert "tests not run" in result.stderr
    assert not any(call.startswith("python -m pytest") for call in calls)


def test_ruff_problems_are_reported_too(stand_in_venv):
    result, calls = run_dev(stand_in_venv, "test", "-q", fail="ruff")
    assert result.returncode != 0
    assert "ruff found problems in core/" in result.stderr
    assert "mypy" in calls  # every check reports before the run stops
    assert not any(call.startswith("python -m pytest") for call in calls)


def test_named_test_files_skip_the_checks(stand_in_venv):
    result, calls = run_dev(stand_in_venv, "test", "tests/test_dev_checks.py::test_named_test_files_skip_the_checks",
                            "-q")
    assert result.returncode == 0, result.stderr
    assert calls == ["python -m pytest tests/test_dev_checks.py::test_named_test_files_skip_the_checks -q"]


def test_dev_check_runs_the_checks_alone(stand_in_venv):
    result, calls = run_dev(stand_in_venv, "check")
    assert result.returncode == 0, result.stderr
    assert {"ruff check core", "mypy"} <= set(calls)
    assert not any(call.startswith("python -m pytest") for call in calls)
