"""The models' benches run end to end on the CPU with tiny settings: bench/gpu_check.py (its GPU
run is by hand) and bench/bench_vs_trl.py (its speed ratios are read by people; here the values,
logits memory and FLOPs, which do not move with the machine's load)."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture
def bench(monkeypatch):
    """Import a bench script by name, with bench/ on the path as when it runs as a script."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    loaded = []

    def load(name: str):
        loaded.append(name)
        return importlib.import_module(name)

    yield load
    for name in loaded + ["logits_memory"]:
        sys.modules.pop(name, None)


def test_gpu_check_runs_with_a_tiny_config_on_cpu(bench, tmp_path, capsys):
    assert bench("gpu_check").main(["--tiny", "--device", "cpu", "--json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["throughput"]["tokens_per_s"] > 0 and results["throughput"]["mfu"] is None  # no GPU peak
    noise = results["margin_noise"]
    assert 0 < noise["noise_std"] < noise["fp32_margin_std"], "bf16 should be noisier than nothing, less than spread"
    padding = results["padding_check"]
    assert padding["tolerance"] == 0.05 and padding["safe"] is True, "a right-pooling Llama is padding-safe in bf16"
    assert padding["outcome"] == "padded batches used"
    assert results["peak_memory"]["rss_gib"] > 0
    for line in ("throughput:", "margin_noise:", "padding_check:", "peak memory:"):
        assert line in out


def test_bench_vs_trl_equals_naive_and_builds_less_than_trl(bench, tmp_path, capsys):
    out_file = tmp_path / "figures.json"
    assert bench("bench_vs_trl").main(["--scale", "0.125", "--pairs", "6", "--vocab", "1000", "--hidden", "64",
                                       "--layers", "2", "--repeats", "1", "--json", str(out_file)]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out_file.read_text())
    assert set(figures["shapes"]) == {"prompt-heavy", "response-heavy"}
    for shape in figures["shapes"].values():
        paths = shape["paths"]
        for name in ("trl", "engine"):
            assert paths[name]["max_abs_diff_vs_naive"] < 1e-4, f"{name} differs from naive"
            assert paths[name]["max_rel_diff_vs_naive"] < 1e-6
            assert paths[name]["speed_vs_trl"] > 0
        assert paths["engine"]["logits_peak_mib"] < paths["trl"]["logits_peak_mib"], "only responses reach the head"
        assert paths["engine"]["gflop"] < paths["trl"]["gflop"], "no padding run, the prompt run once"
        assert 0 < shape["trl_padding_share"] < 1
    assert "vs TRL" in out and "engine vs TRL, slowest shape:" in out
