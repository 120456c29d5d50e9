"""The demo world generator: determinism, labels, planted flips, bad rows, the committed sample."""

from __future__ import annotations

import argparse
import doctest
import json
import math
from pathlib import Path

import pytest

import core.demo.world as world
from core.data.pairs import pair_id
from core.demo.world import (
    BAD_ROW_KINDS,
    WorldConfig,
    generate_world,
    oracle_reward,
    response_features,
    world_lines,
    write_world,
)

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "demo"
SMALL = WorldConfig(n_pairs=300, seed=3)


def read_sample_lines() -> list[str]:
    return (SAMPLE / "pairs.jsonl").read_text(encoding="utf-8").splitlines()


def test_doctests():
    assert doctest.testmod(world).failed == 0


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_world(first, SMALL)
    write_world(second, SMALL)
    write_world(other, WorldConfig(n_pairs=300, seed=4))
    for name in ("pairs.jsonl", "oracle.jsonl", "world.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "pairs.jsonl").read_bytes() != (other / "pairs.jsonl").read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


def test_sizes_and_ids():
    pair_lines, oracle_lines = world_lines(SMALL)
    assert len(pair_lines) == SMALL.n_pairs + SMALL.bad_rows
    assert len(oracle_lines) == SMALL.n_pairs
    rows, oracle = generate_world(SMALL)
    assert [r["id"] for r in rows] == [o["id"] for o in oracle]
    assert len({o["pair_id"] for o in oracle}) == SMALL.n_pairs
    assert world_lines(WorldConfig(n_pairs=50, bad_rows=0))[0] == [
        json.dumps(r, ensure_ascii=False) for r in generate_world(WorldConfig(n_pairs=50, bad_rows=0))[0]
    ]


def test_responses_are_short():
    rows, _ = generate_world(SMALL)
    longest = max(len(r[side][0]["content"].split()) for r in rows for side in ("chosen", "rejected"))
    assert longest <= 48


def test_flip_rate_matches_the_logistic_noise_model():
    config = WorldConfig(n_pairs=4000, noise_scale=1.0, toxic_share=0.0, bad_rows=0, seed=11)
    _, oracle = generate_world(config)
    untied = [o for o in oracle if o["oracle_margin"] != 0]
    observed = sum(o["noise_flipped"] for o in untied) / len(untied)
    # P(label disagrees with the truth | |d|) = P(zeta < -|d|) = sigmoid(-|d| / s)
    expected = sum(1 / (1 + math.exp(abs(o["oracle_margin"]) / config.noise_scale)) for o in untied) / len(untied)
    tolerance = 4 * math.sqrt(expected * (1 - expected) / len(untied))
    assert abs(observed - expected) < tolerance
    assert 0.1 < observed < 0.3


def test_no_noise_no_flips():
    _, oracle = generate_world(WorldConfig(n_pairs=500, noise_scale=0.0, toxic_share=0.0, bad_rows=0))
    assert all(o["oracle_margin"] >= 0 and not o["noise_flipped"] for o in oracle)


def test_planted_toxic_flips_are_present_and_labelled():
    config = WorldConfig(n_pairs=1000, toxic_share=0.05, seed=5)
    rows, oracle = generate_world(config)
    planted = [(r, o) for r, o in zip(rows, oracle) if o["toxic_flip"]]
    assert len(planted) == 50
    for row, entry in planted:
        prompt = row["prompt"][0]["content"]
        assert response_features(prompt, row["chosen"][0]["content"])["toxic"] >= 1
        assert response_features(prompt, row["rejected"][0]["content"])["toxic"] == 0
        assert entry["oracle_margin"] < 0 and not entry["noise_flipped"]


def test_features_are_read_from_text():
    prompt = "how do I bake bread ?"
    text = (
        "Happy to help! Measure the flour and water first. Measure the flour and water first. "
        "Signal before you turn. See www.example.com for more. You are hopeless at this. Blah blah."
    )
    assert response_features(prompt, text) == {
        "helpful": 1.0, "off_topic": 1.0, "polite": 1.0, "toxic": 1.0,
        "link": 1.0, "repeated": 1.0, "filler": 0.0, "unknown": 1.0,
    }  # fmt: skip
    assert oracle_reward(prompt, text) == pytest.approx(0.4 + 1.0 - 0.5 - 0.6 - 0.4 - 3.0 - 0.5)


def test_committed_sample_matches_the_generator(tmp_path):
    write_world(tmp_path, WorldConfig())
    for name in ("pairs.jsonl", "oracle.jsonl", "world.json"):
        assert (SAMPLE / name).read_bytes() == (tmp_path / name).read_bytes(), (
            f"sample_data/demo/{name} differs from the generator: run `dmtui demo generate`"
        )


def test_oracle_recomputed_from_text_equals_the_record():
    oracle = {
        o["id"]: o for o in map(json.loads, (SAMPLE / "oracle.jsonl").read_text(encoding="utf-8").splitlines())
    }
    checked = 0
    for line in read_sample_lines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["id"] not in oracle or "bad" in row["id"]:
            continue
        entry = oracle[row["id"]]
        prompt = row["prompt"][0]["content"]
        assert oracle_reward(prompt, row["chosen"][0]["content"]) == entry["reward_chosen"]
        assert oracle_reward(prompt, row["rejected"][0]["content"]) == entry["reward_rejected"]
        assert pair_id(row["prompt"], row["chosen"], row["rejected"]) == entry["pair_id"]
        checked += 1
    assert checked == len(oracle) + 1  # the duplicate line repeats one good row


def classify_bad_line(line: str, seen: set[str]) -> str | None:
    """Which BAD_ROW_KINDS a line is, or None for a good line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return "malformed_json"
    if line in seen:
        return "duplicate"
    seen.add(line)
    if "chosen" not in row:
        return "missing_chosen"
    if row["prompt"] is None:
        return "null_prompt"
    if row["chosen"] == row["rejected"]:
        return "identical_responses"
    if not row["rejected"][0]["content"]:
        return "empty_rejected"
    return None


def test_bad_lines_present_once_each_and_spread():
    seen: set[str] = set()
    found = [(n, kind) for n, line in enumerate(read_sample_lines()) if (kind := classify_bad_line(line, seen))]
    assert sorted(kind for _, kind in found) == sorted(BAD_ROW_KINDS)
    positions = [n for n, _ in found]
    assert min(positions) > 100 and max(positions) < 3900
    assert min(b - a for a, b in zip(positions, positions[1:])) > 100


def test_no_bad_rows_when_switched_off():
    seen: set[str] = set()
    lines, _ = world_lines(WorldConfig(n_pairs=200, bad_rows=0))
    assert not any(classify_bad_line(line, seen) for line in lines)


def test_cli_generate_writes_the_world(tmp_path, capsys):
    from core.errors import DmtuiError
    from dmtui.headless import demo

    parser = argparse.ArgumentParser()
    demo.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "generate", "--out", str(tmp_path), "--pairs", "40", "--seed", "2"])
    assert args.handler(args) == 0
    assert len((tmp_path / "oracle.jsonl").read_text().splitlines()) == 40
    assert json.loads((tmp_path / "world.json").read_text())["config"]["seed"] == 2
    bad = parser.parse_args(["demo", "generate", "--out", str(tmp_path), "--toxic-share", "2"])
    with pytest.raises(DmtuiError):
        bad.handler(bad)
