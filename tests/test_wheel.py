"""The built wheel works on its own: installed (not editable) into a fresh virtualenv and run
from a folder where the source tree is not importable, it finds the demo world and scores.

Nothing big is downloaded: the fresh venv sees the project venv's packages (torch,
transformers, ...) through a .pth line, after its own site-packages, so `core` and
`dmtui` come from the wheel; the demo models come from the tests' shared cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel built from this tree; returns its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in ("core", "dmtui", "sample_data"):
        shutil.copytree(REPO / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.dmtui"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(root / "dist"), str(source)])
    wheel = next((root / "dist").glob("dmtui-*.whl"))
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    fresh = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(fresh) / "project-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root / "venv" / "bin"


def test_the_wheel_carries_the_demo_world_and_scores_a_slice_of_it(installed, tmp_path, demo_models,
                                                                 demo_cache_dir):
    env = {**os.environ, "DMTUI_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "demo-models").symlink_to(demo_cache_dir / "demo-models")  # built once for all tests
    where = run([str(installed / "python"), "-c",
                 "import core, core.demo.sample_data as s; print(core.__file__); print(s.demo_dataset())"],
                cwd=tmp_path, env=env).stdout.split()
    assert not where[0].startswith(str(REPO)), where  # the wheel's code, not this tree's
    demo = Path(where[1])
    assert demo == tmp_path / "cache" / "sample_data" / "demo" / "pairs.jsonl"
    assert demo.read_bytes() == (REPO / "sample_data" / "demo" / "pairs.jsonl").read_bytes()

    info = run([str(installed / "dmtui"), "info", str(demo), "--json"], cwd=tmp_path, env=env)
    assert json.loads(info.stdout)["loaded"] == 4000

    rows = [line for line in demo.read_text("utf-8").splitlines() if line.startswith('{"id"')][:24]
    (tmp_path / "slice.jsonl").write_text("\n".join(rows) + "\n", "utf-8")
    scored = run([str(installed / "dmtui"), "score", "slice.jsonl", "--demo", "--sources", "external",
                  "--device", "cpu", "--json"], cwd=tmp_path, env=env)
    report = json.loads(scored.stdout.strip().splitlines()[-1])
    assert report["sources"]["external"]["scored"] == 24
    assert (tmp_path / "slice.dmtui" / "scores" / "external").is_dir()
