"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Tests never reach a model hub; everything they load is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_cache_dir() -> Path:
    """The demo-model cache tests share: $DMTUI_CACHE, else the repo's gitignored .cache/dmtui."""
    return Path(os.environ.get("DMTUI_CACHE") or REPO_ROOT / ".cache" / "dmtui")


@pytest.fixture(scope="session")
def demo_models(demo_cache_dir: Path):
    """The default demo models (tokenizer, pi_0, reward model), built once and then cached."""
    from core.demo.models import DemoModelsConfig, ensure_demo_models

    return ensure_demo_models(DemoModelsConfig(cache_dir=str(demo_cache_dir)))


@pytest.fixture(autouse=True)
def _own_recent_list(tmp_path_factory, monkeypatch):
    """The app remembers opened workspaces (core.store.recent): in tests, in a folder of their own."""
    monkeypatch.setenv("DMTUI_STATE_DIR", str(tmp_path_factory.mktemp("state")))
