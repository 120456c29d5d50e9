"""core.selection.views: search with Arrow kernels (text, conversations, kept columns), the sort cache."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import core.selection.views as views
from core.curation.session import CurationSession
from core.data.loading import LoadConfig, load_dataset
from core.selection.selector import SelectionParams, select, tie_keys_from_pair_ids
from core.selection.views import (
    ExamplesView,
    RowOrder,
    ViewChoice,
    column_contains,
    kept_text_columns,
    kept_values,
    last_turn,
    ordered_rows,
    prompt_turns,
    search_mask,
    sorted_order,
    trim_leading_blank_lines,
    why_not_selected,
)
from core.store.annotations import Annotation, AnnotationMasks
from core.store.margin_sources import MarginSpec, resolve_margins


def conversation(user: str, assistant: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": user}]
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    return messages


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return str(path)


def test_search_is_case_insensitive_literal_and_unicode_aware(tmp_path):
    rows = [{"id": "a-1", "prompt": "Café au lait (x.y)", "chosen": "yes", "rejected": "no"},
            {"id": "a-2", "prompt": "CAFE", "chosen": "x", "rejected": "y"},
            {"id": "a-3", "prompt": "plain", "chosen": "ÉCOLE", "rejected": "z"}]
    pairs = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows)).pairs
    assert search_mask(pairs, "café").tolist() == [True, False, False]
    assert search_mask(pairs, "cafe").tolist() == [False, True, False]
    assert search_mask(pairs, "(X.Y").tolist() == [True, False, False]  # a literal, not a pattern
    assert search_mask(pairs, "x.z").tolist() == [False, False, False]
    assert search_mask(pairs, "école").tolist() == [False, False, True]
    assert search_mask(pairs, "  ").all()
    first_id = pairs["pair_id"][0].as_py()
    assert search_mask(pairs, first_id[:6].upper())[0]


def test_conversations_are_searched_message_by_message_across_chunks():
    contents = [conversation(f"question {i}", "zebra" if i % 7 == 3 else f"answer {i}") for i in range(50)]
    column = pa.chunked_array([pa.array(contents[:20]), pa.array(contents[20:])])
    assert column.num_chunks == 2
    found = column_contains(column, "ZEBRA")
    assert np.flatnonzero(found).tolist() == [i for i in range(50) if i % 7 == 3]
    assert not column_contains(column, "assistant").any()  # roles are not text of the pair
    assert not column_contains(pa.chunked_array([pa.array([1, 2])]), "1").any()  # not text: no match


def test_search_finds_the_datasets_own_ids_in_json_records(tmp_path):
    rows = [{"id": f"demo-{i:06d}", "topic": "cooking" if i % 2 else "Python", "n": i, "meta": {"k": i},
             "mixed": "text" if i else 5, "prompt": conversation(f"q{i}"), "chosen": conversation("c", f"good {i}"),
             "rejected": conversation("c", f"bad {i}")} for i in range(12)]
    loaded = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    kept = kept_text_columns(loaded)
    assert kept.column_names == ["id", "topic"]  # numbers, objects and mixed fields are not text
    assert kept["id"].to_pylist() == [row["id"] for row in rows]
    found = search_mask(loaded.pairs, "demo-000009", kept)
    assert np.flatnonzero(found).tolist() == [9]
    assert search_mask(loaded.pairs, "python", kept).sum() == 6
    assert kept_values(loaded, 9) == {"id": "demo-000009", "topic": "cooking", "n": 9, "meta": {"k": 9},
                                      "mixed": "text"}


def test_kept_text_columns_read_in_chunks_and_drop_a_field_that_turns_numeric(tmp_path, monkeypatch):
    monkeypatch.setattr(views, "KEPT_CHUNK_ROWS", 4)
    rows = [{"id": f"r{i}", "late": 7 if i == 9 else f"t{i}", "prompt": f"p{i}", "chosen": "a", "rejected": "b"}
            for i in range(11)]
    loaded = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    seen = []
    kept = kept_text_columns(loaded, progress=lambda done, total: seen.append((done, total)))
    assert kept.column_names == ["id"] and kept.num_rows == 11
    assert kept["id"].to_pylist() == [f"r{i}" for i in range(11)]
    assert seen[-1] == (11, 11)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_kept_columns_of_typed_sources(tmp_path, kind):
    rows = [{"uid": f"x-{i}", "score": i, "prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(5)]
    if kind == "csv":
        path = tmp_path / "d.csv"
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        path = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    loaded = load_dataset(str(path), LoadConfig())
    kept = kept_text_columns(loaded)
    assert "uid" in kept.column_names
    assert np.flatnonzero(search_mask(loaded.pairs, "X-3", kept)).tolist() == [3]
    assert kept_values(loaded, 2)["uid"] == "x-2"


def test_sorted_order_is_a_stable_float_sort_with_non_finite_last():
    rng = np.random.default_rng(1)
    keys = np.round(rng.normal(0, 2, 5000), 1)
    keys[rng.integers(0, 5000, 200)] = np.nan
    keys[:3] = [np.inf, -np.inf, -0.0]
    keys[3:6] = [0.0, -1e-300, 1e-300]
    finite = np.isfinite(keys)
    for descending in (False, True):
        order = sorted_order(keys, descending)
        expected_keys = np.where(finite, -keys if descending else keys, np.inf)
        expected = np.argsort(expected_keys, kind="stable")
        np.testing.assert_array_equal(order, expected)


def test_row_order_reuses_the_sort_when_the_key_is_unchanged(monkeypatch):
    rng = np.random.default_rng(2)
    key = np.round(rng.normal(size=10_000), 2)
    masks = [np.ones(key.size, bool)] + [rng.random(key.size) < 0.3 for _ in range(3)]
    expected = [ordered_rows(mask, key, True) for mask in masks]
    changed = key.copy()
    changed[0] += 1
    expected_changed = ordered_rows(masks[0], changed, True)
    calls = []
    real = views.sorted_order
    monkeypatch.setattr(views, "sorted_order", lambda *args: calls.append(1) or real(*args))
    order = RowOrder()
    for mask, rows in zip(masks, expected):
        same_content = key.copy()  # a fresh array with the same values, as each selection makes
        np.testing.assert_array_equal(order.rows(mask, same_content, True), rows)
    assert len(calls) == 1
    np.testing.assert_array_equal(order.rows(masks[0], changed, True), expected_changed)
    assert len(calls) == 2
    np.testing.assert_array_equal(order.rows(masks[0], None, True), np.arange(key.size)[::-1])


def ultrafeedback_like(count: int, seed: int) -> list[dict]:
    """Scores in half points, as UltraFeedback's: many pairs tie on their margin."""
    rng = np.random.default_rng(seed)
    return [{"prompt": f"p{i}", "chosen": f"a{i}", "rejected": f"b{i}", "score_chosen": int(rng.integers(10, 21)) / 2,
             "score_rejected": int(rng.integers(2, 13)) / 2} for i in range(count)]


def test_a_region_filter_shows_exactly_the_pairs_its_baseline_selects(tmp_path):
    """Ties broken by pair_id, MID sampled by pair_id hash, swaps and exclusions honoured:
    the `top:` / `mid:` / `bot:SOURCE` filter is the selection, not a look-alike."""
    rows = ultrafeedback_like(300, seed=3)
    dataset = load_dataset(write_jsonl(tmp_path / "uf.jsonl", rows))
    margins = resolve_margins(dataset, [MarginSpec.parse("external=score_chosen,score_rejected")])
    annotations = AnnotationMasks.empty(dataset.pairs.num_rows)
    ids = dataset.pairs["pair_id"].to_pylist()
    annotations.set(0, Annotation(ids[0], swapped=True))
    annotations.set(1, Annotation(ids[1], excluded=True))
    session = CurationSession(dataset, margins, annotations)
    margin = margins.margins["external"]
    assert np.unique(margin).size < margin.size // 3  # ties everywhere
    view = ExamplesView(dataset, session.select)
    effective = {"external": session.effective_margin("external")}
    for region in ("top", "mid", "bot"):
        for budget in (5, 20, 37, 150):
            params = SelectionParams(mode="dm-mul", budget=budget, trim=0.0)
            rows_shown = view.rows(ViewChoice(row_filter=f"{region}:external", sort="row", descending=False), None, params, annotations,
                                   effective)
            baseline = session.select(replace(params, mode=region, source="external"))
            assert rows_shown.tolist() == sorted(baseline.indices.tolist())

    def mid_ids(loaded) -> set[str]:
        own = CurationSession(loaded, resolve_margins(loaded, [MarginSpec.parse("external=score_chosen,score_rejected")]))
        shown = ExamplesView(loaded, own.select).rows(
            ViewChoice(row_filter="mid:external", sort="row", descending=False), None, SelectionParams(budget=30), own.annotations,
            {"external": own.effective_margin("external")})
        assert shown.size == 30
        return set(loaded.pairs["pair_id"].take(pa.array(shown)).to_pylist())

    backward = load_dataset(write_jsonl(tmp_path / "backward.jsonl", rows[::-1]))
    assert mid_ids(dataset) == mid_ids(backward)  # by pair_id hash, not row position


def test_hh_prompts_collapse_to_their_last_turn():
    hh = "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how do I cook rice?\n\nAssistant:"
    assert [role for role, _ in prompt_turns(hh)] == ["user", "assistant", "user", "assistant"]
    assert last_turn(hh) == ("Human: how do I cook rice?\n\nAssistant:", 2)
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": "\n\nc"}]
    assert last_turn(messages) == ("user: \n\nc", 2)
    assert last_turn("\n \n\nplain text\n\nmore") == ("plain text\n\nmore", 0)
    assert trim_leading_blank_lines("\n\t\n  indented\n\nkept") == "  indented\n\nkept"


def test_why_a_pair_is_not_selected():
    external = np.array([5.0, 4.0, 3.0, 2.0, -3.0, 1.0, np.nan, 4.5])
    implicit = np.array([5.0, 4.0, -5.0, 2.0, 3.0, 1.0, 1.0, 4.5])
    margins = {"external": external, "implicit": implicit}
    excluded = np.zeros(8, bool)
    excluded[7] = True
    params = SelectionParams(budget=2, m1=-2.0, m2=6.0)
    selection = select(margins, params, excluded=excluded)
    assert selection.indices.tolist() == [0, 1]
    reasons = [why_not_selected(selection, i, margins, excluded) for i in range(8)]
    assert reasons[:2] == [None, None]
    assert reasons[2] == "implicit below M1 (P = 0)"
    assert reasons[4] == "external below M1 (P = 0)"
    assert reasons[3].startswith("score ") and "below the budget's cut-off" in reasons[3]
    assert reasons[6] == "no external score"
    assert reasons[7] == "excluded by you"
    top = select({"m": np.arange(200.0)}, SelectionParams(mode="top", source="m", budget=5))
    assert "outlier trim" in why_not_selected(top, 199, {"m": np.arange(200.0)}, np.zeros(200, bool))
    mid = select({"m": np.linspace(-3, 3, 200)}, SelectionParams(mode="mid", source="m", budget=5))
    assert "MID window" in why_not_selected(mid, 10, {"m": np.linspace(-3, 3, 200)}, np.zeros(200, bool))
