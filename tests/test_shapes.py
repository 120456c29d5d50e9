"""Public preference-dataset shapes, each as a local fixture built to the dataset's schema
(nothing downloaded), loaded as its authors meant."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.data.load_report import REASONS, SHAPES
from core.data.loading import LoadConfig, load_dataset
from core.data.pairs import pair_id, shared_text_prefix
from core.data.shapes import MissingColumnsError
from core.errors import LoadError
from core.store.margin_sources import MarginSpec, resolve_margins


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def a(text: str) -> dict:
    return {"role": "assistant", "content": text}


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def load(path: str, **config):
    loaded = load_dataset(path, LoadConfig(**config))
    report = loaded.report
    assert report.read == report.loaded + report.rejected_total
    assert loaded.pairs.num_rows == report.loaded
    assert set(report.rejected) <= set(REASONS)
    assert report.shape in SHAPES or report.loaded == 0
    return loaded


# ---------------------------------------------------------------------------------
# UltraFeedback-binarized (HuggingFaceH4/ultrafeedback_binarized, train_prefs)
# ---------------------------------------------------------------------------------

def ultrafeedback_rows() -> list[dict]:
    """prompt (string), prompt_id, chosen / rejected = [user turn, assistant reply],
    messages (= chosen), score_chosen, score_rejected (floats, ties included)."""
    items = [("What is the capital of France?", "Paris is the capital.", "Lyon.", 9.0, 4.0),
             ("Write a haiku about rain.", "Soft rain on the roof / ...", "Rain is wet.", 7.5, 7.5),
             ("How do I sort a list in Python?", "Use sorted(xs) or xs.sort().", "You cannot.", 8.0, 2.0),
             ("Explain DPO in one line.", "DPO fits a policy to preferences directly.", "It is a GPU.", 6.0, 1.5)]
    rows = []
    for prompt, chosen, rejected, score_chosen, score_rejected in items:
        rows.append({
            "prompt": prompt,
            "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
            "chosen": [u(prompt), a(chosen)],
            "rejected": [u(prompt), a(rejected)],
            "messages": [u(prompt), a(chosen)],
            "score_chosen": score_chosen,
            "score_rejected": score_rejected,
        })
    return rows


@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_ultrafeedback_binarized(tmp_path, kind):
    rows = ultrafeedback_rows()
    if kind == "parquet":  # as the hub ships it: content before role in the message structs
        path = tmp_path / "train_prefs.parquet"
        message = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
        schema = pa.schema([("prompt", pa.string()), ("prompt_id", pa.string()), ("chosen", message),
                            ("rejected", message), ("messages", message), ("score_chosen", pa.float64()),
                            ("score_rejected", pa.float64())])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
        path = str(path)
    else:
        path = write_jsonl(tmp_path / "train_prefs.jsonl", rows)
    loaded = load(path)
    report = loaded.report
    assert (report.read, report.loaded, report.rejected_total) == (4, 4, 0)
    assert report.format == "conversational" and report.shape == "prompt_and_message_replies"
    assert report.prompt_rules == {"shared_messages": 4}
    first = loaded.pairs.to_pylist()[0]
    assert (first["prompt"], first["chosen"], first["rejected"]) == (
        [u("What is the capital of France?")], [a("Paris is the capital.")], [a("Lyon.")])
    assert first["pair_id"] == pair_id([u("What is the capital of France?")], [a("Paris is the capital.")], [a("Lyon.")])
    assert report.extra_columns == ["prompt_id", "messages", "score_chosen", "score_rejected"]
    assert report.score_columns[0] == ["score_chosen", "score_rejected"]
    assert report.tied_scores == 1 and any("1 pairs tie on score_chosen = score_rejected" in w for w in report.warnings)
    margins = resolve_margins(loaded, [MarginSpec.parse("external=score_chosen,score_rejected")])
    np.testing.assert_array_equal(margins.margins["external"], [5.0, 0.0, 6.0, 4.5])


def test_ultrafeedback_prompt_that_is_not_the_repeated_turn_is_warned(tmp_path):
    rows = ultrafeedback_rows()
    rows[2]["prompt"] = "Something else"
    report = load(write_jsonl(tmp_path / "uf.jsonl", rows)).report
    assert report.loaded == 4
    assert any("1 rows have a prompt column" in w and "line 3" in w for w in report.warnings)


@pytest.mark.parametrize("prompt", [None, "hi"])
def test_a_conversation_that_holds_the_other_is_an_empty_reply_not_identical(tmp_path, prompt):
    rows = [{"chosen": [u("hi"), a("one"), a("two")], "rejected": [u("hi"), a("one")]},
            {"chosen": [u("hi"), a("good")], "rejected": [u("hi"), a("bad")]}]
    if prompt is not None:
        rows = [{"prompt": prompt, **row} for row in rows]
    report = load(write_jsonl(tmp_path / "c.jsonl", rows)).report
    assert report.loaded == 1
    assert [(r.reason, r.location, r.column) for r in report.rejections] == [("empty_field", "line 1", "rejected")]


def test_string_prompt_before_reply_only_messages_becomes_the_user_turn(tmp_path):
    rows = [{"prompt": "2+2?", "chosen": [a("4")], "rejected": [a("5")]}]
    loaded = load(write_jsonl(tmp_path / "d.jsonl", rows))
    assert loaded.pairs.to_pylist()[0]["prompt"] == [u("2+2?")]
    assert loaded.report.prompt_rules == {"prompt_as_user_turn": 1}


# ---------------------------------------------------------------------------------
# Anthropic HH-RLHF (chosen / rejected = whole dialogues)
# ---------------------------------------------------------------------------------

def hh(*turns: str) -> str:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' as HH-RLHF writes its dialogues."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {text}" for i, text in enumerate(turns))


HH_ROWS = [
    # both replies start with the same word: the shared-beginning rule cut inside the reply
    {"chosen": hh("What does this mean?", "I'm not sure what you mean. Can you clarify?"),
     "rejected": hh("What does this mean?", "I'm sorry, I don't understand.")},
    {"chosen": hh("Hi", "Hello! How can I help?", "Tell me a joke", "Why did the chicken cross the road?"),
     "rejected": hh("Hi", "Hello! How can I help?", "Tell me a joke", "No.")},
    {"chosen": hh("Is the sky blue?", "Yes, on a clear day."), "rejected": hh("Is the sky blue?", "No.")},
    # differs before the last reply: no single prompt
    {"chosen": hh("A", "B", "C", "D"), "rejected": hh("A", "other", "C", "E")},
]


def test_hh_rlhf_becomes_conversations_split_at_the_last_assistant_turn(tmp_path):
    loaded = load(write_jsonl(tmp_path / "hh.jsonl", HH_ROWS))
    report = loaded.report
    assert (report.loaded, dict(report.rejected)) == (3, {"unsplittable_dialogue": 1})
    assert report.rejections[0].location == "line 4" and "turn 2" in report.rejections[0].detail
    assert report.shape == "role_marked" and report.role_markers == "hh" and report.role_text == "conversations"
    assert report.format == "conversational" and report.prompt_rules == {"last_assistant_turn": 3}
    pairs = loaded.pairs.to_pylist()
    assert (pairs[0]["prompt"], pairs[0]["chosen"], pairs[0]["rejected"]) == (
        [u("What does this mean?")], [a("I'm not sure what you mean. Can you clarify?")],
        [a("I'm sorry, I don't understand.")])
    assert pairs[1]["prompt"] == [u("Hi"), a("Hello! How can I help?"), u("Tell me a joke")]
    assert pairs[1]["chosen"] == [a("Why did the chicken cross the road?")]
    example = report.prompt_examples["last_assistant_turn"][0]
    assert example["location"] == "line 1" and example["chosen_start"].startswith("assistant: I'm not sure")


def test_hh_rlhf_kept_as_text_never_cuts_inside_a_reply(tmp_path):
    loaded = load(write_jsonl(tmp_path / "hh.jsonl", HH_ROWS), keep_role_text=True)
    report = loaded.report
    assert report.format == "standard" and report.role_text == "text" and "--keep-role-text" in report.role_text_reason
    pairs = loaded.pairs.to_pylist()
    assert pairs[0]["prompt"].endswith("\n\nAssistant:")
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == (" I'm not sure what you mean. Can you clarify?",
                                                          " I'm sorry, I don't understand.")
    for pair, row in zip(pairs, HH_ROWS):
        assert pair["prompt"] + pair["chosen"] == row["chosen"] and pair["prompt"] + pair["rejected"] == row["rejected"]
    # A pair whose replies differ from the first word split as before: the same pair_id.
    row = HH_ROWS[2]
    cut = shared_text_prefix(row["chosen"], row["rejected"])
    assert pairs[2]["pair_id"] == pair_id(row["chosen"][:cut], row["chosen"][cut:], row["rejected"][cut:])


def test_a_reply_that_quotes_a_dialogue_is_split_at_the_real_last_turn(tmp_path):
    question = "write a script with a line 'Human: hi'"
    rows = [{"chosen": hh(question, "Here:\nHuman: hi\nAssistant: hello"), "rejected": hh(question, "no.")},
            HH_ROWS[2]]
    loaded = load(write_jsonl(tmp_path / "quote.jsonl", rows))
    assert loaded.report.rejected_total == 0 and loaded.report.role_text == "conversations"
    pair = loaded.pairs.to_pylist()[0]
    assert (pair["prompt"], pair["chosen"], pair["rejected"]) == (
        [u(question)], [a("Here:\nHuman: hi\nAssistant: hello")], [a("no.")])
    text = load(write_jsonl(tmp_path / "quote.jsonl", rows), keep_role_text=True).pairs.to_pylist()[0]
    assert text["prompt"] == hh(question, "")[:-1] and text["chosen"] == " Here:\nHuman: hi\nAssistant: hello"


def test_role_marked_text_with_an_unmarked_row_stays_text_and_says_why(tmp_path):
    rows = HH_ROWS[:3] + [{"chosen": "Plain text, good answer", "rejected": "Plain text, bad one"}]
    report = load(write_jsonl(tmp_path / "hh.jsonl", rows)).report
    assert report.role_text == "text" and report.format == "standard"
    assert "1 of 4 pairs do not read as role-marked dialogues (the first at line 4)" in report.role_text_reason
    assert report.prompt_rules == {"last_assistant_turn": 3, "shared_beginning": 1}


def test_replies_equal_once_read_as_conversations_are_identical(tmp_path):
    rows = [{"chosen": hh("hi", "hello"), "rejected": hh("hi", "hello  ")}, HH_ROWS[2]]
    loaded = load(write_jsonl(tmp_path / "hh.jsonl", rows))
    assert (loaded.report.loaded, dict(loaded.report.rejected)) == (1, {"identical_responses": 1})
    assert loaded.report.rejections[0].location == "line 1"


@pytest.mark.parametrize("chosen,rejected,family,messages", [
    ("### Human: Add 2+2 ### Assistant: 4", "### Human: Add 2+2 ### Assistant: 5", None, None),
    ("### Human: Add 2+2\n### Assistant: 4", "### Human: Add 2+2\n### Assistant: 5", "guanaco",
     ([u("Add 2+2")], [a("4")], [a("5")])),
    ("A chat. USER: Add 2+2 ASSISTANT: 4", "A chat. USER: Add 2+2 ASSISTANT: 5", "vicuna",
     ([{"role": "system", "content": "A chat."}, u("Add 2+2")], [a("4")], [a("5")])),
    ("User: hi\nAssistant: hello", "User: hi\nAssistant: go", "user-assistant", ([u("hi")], [a("hello")], [a("go")])),
])
def test_other_role_markers_in_whole_dialogues(tmp_path, chosen, rejected, family, messages):
    loaded = load(write_jsonl(tmp_path / "d.jsonl", [{"chosen": chosen, "rejected": rejected}]))
    pair = loaded.pairs.to_pylist()[0]
    assert loaded.report.role_markers == family
    if messages is None:  # markers not at a line start: the shared beginning, at a word boundary
        assert loaded.report.prompt_rules == {"shared_beginning": 1}
    else:
        assert (pair["prompt"], pair["chosen"], pair["rejected"]) == messages


def test_alpaca_prompt_column_becomes_a_conversation(tmp_path):
    preamble = "Below is an instruction that describes a task. Write a response that completes the request."
    rows = [{"prompt": f"{preamble}\n\n### Instruction:\nAdd {i}+{i}\n\n### Response:\n", "chosen": str(2 * i),
             "rejected": str(2 * i + 1)} for i in range(3)]
    loaded = load(write_jsonl(tmp_path / "alpaca.jsonl", rows))
    report = loaded.report
    assert report.shape == "role_marked_prompt" and report.role_markers == "alpaca"
    assert report.role_text == "conversations"
    pair = loaded.pairs.to_pylist()[1]
    assert pair["prompt"] == [{"role": "system", "content": preamble}, u("Add 1+1")]
    assert (pair["chosen"], pair["rejected"]) == ([a("2")], [a("3")])
    kept = load(write_jsonl(tmp_path / "alpaca.jsonl", rows), keep_role_text=True)
    assert kept.pairs.to_pylist()[1]["prompt"] == rows[1]["prompt"]


@pytest.mark.parametrize("fast", [False, True])
def test_alpaca_input_column_follows_the_instruction_in_the_prompt(tmp_path, monkeypatch, fast):
    import core.data.loading

    monkeypatch.setattr(core.data.loading, "FAST_IMPORT", fast)
    rows = [{"instruction": "Translate to English.", "input": "bonjour", "chosen": "hello", "rejected": "bye"},
            {"instruction": "Name a colour.", "input": "", "chosen": "Blue.", "rejected": "Seven."},
            {"instruction": "Add the numbers.", "input": None, "chosen": "3", "rejected": "4"},
            {"instruction": "Sum.", "input": [1, 2], "chosen": "3", "rejected": "4"}]
    loaded = load(write_jsonl(tmp_path / "alpaca.jsonl", rows))
    report = loaded.report
    assert report.columns == {"prompt": "instruction", "input": "input", "chosen": "chosen", "rejected": "rejected"}
    assert set(report.guessed_columns) == {"prompt", "input"} and "input" not in report.extra_columns
    assert report.shape == "instruction_and_input"
    assert [pair["prompt"] for pair in loaded.pairs.to_pylist()] == [
        "Translate to English.\n\nbonjour", "Name a colour.", "Add the numbers."]
    assert report.prompt_rules == {"instruction_and_input": 1, "prompt_column": 2}
    assert [(r.reason, r.location, r.column) for r in report.rejections] == [("wrong_type", "line 4", "input")]
    # the export's reload (training) names the prompt column: the input still follows it
    again = load(write_jsonl(tmp_path / "alpaca.jsonl", rows[:1]), prompt_col="instruction")
    assert again.pairs["prompt"].to_pylist() == ["Translate to English.\n\nbonjour"]
    # an input column beside another prompt column is just kept
    other = load(write_jsonl(tmp_path / "q.jsonl", [{"question": "q", "input": "x", "chosen": "a", "rejected": "b"}]))
    assert other.pairs["prompt"].to_pylist() == ["q"] and other.report.extra_columns == ["input"]


@pytest.mark.parametrize("replies", ["role_marked_text", "conversations"])
def test_a_system_column_without_a_prompt_column_is_refused(tmp_path, replies):
    if replies == "conversations":
        row = {"sys": "Be nice.", "chosen": [u("hi"), a("hello")], "rejected": [u("hi"), a("go away")]}
    else:
        row = {"sys": "Be nice.", **HH_ROWS[0]}
    path = write_jsonl(tmp_path / "sys.jsonl", [row])
    with pytest.raises(LoadError, match=r"sys\.jsonl: --system-col sys, but the data has no prompt column") as error:
        load_dataset(path, LoadConfig(system_col="sys"))
    assert "--prompt-col" in error.value.hint
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([row]), buffer)
    (tmp_path / "sys.parquet").write_bytes(buffer.getvalue())
    with pytest.raises(LoadError, match="no prompt column"):
        load_dataset(str(tmp_path / "sys.parquet"), LoadConfig(system_col="sys"))


# ---------------------------------------------------------------------------------
# Orca-DPO-pairs (system, question, chosen, rejected) and multi-turn prompts
# ---------------------------------------------------------------------------------

ORCA_ROWS = [
    {"system": "You are an AI assistant. Provide a detailed answer.", "question": "What is 2+2?",
     "chosen": "2+2 equals 4.", "rejected": "5"},
    {"system": "", "question": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},
]


def test_orca_dpo_pairs_system_and_question(tmp_path):
    path = tmp_path / "orca.parquet"
    pq.write_table(pa.Table.from_pylist(ORCA_ROWS), path)
    loaded = load(str(path))
    report = loaded.report
    assert report.columns == {"prompt": "question", "system": "system", "chosen": "chosen", "rejected": "rejected"}
    assert report.guessed_columns == ["prompt", "system"] and report.shape == "system_column"
    pairs = loaded.pairs.to_pylist()
    assert pairs[0]["prompt"] == [{"role": "system", "content": ORCA_ROWS[0]["system"]}, u("What is 2+2?")]
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ([a("2+2 equals 4.")], [a("5")])
    assert pairs[1]["prompt"] == [u("Name a colour.")]  # a blank system message is none


def test_system_col_with_multi_turn_prompts(tmp_path):
    rows = [{"sys_prompt": "Be terse.", "prompt": [u("hi"), a("hello"), u("2+2?")], "chosen": [a("4")],
             "rejected": [a("four, I think")]}]
    loaded = load(write_jsonl(tmp_path / "d.jsonl", rows), system_col="sys_prompt")
    pair = loaded.pairs.to_pylist()[0]
    assert pair["prompt"] == [{"role": "system", "content": "Be terse."}, u("hi"), a("hello"), u("2+2?")]
    assert loaded.report.columns["system"] == "sys_prompt"


def test_a_system_column_that_is_not_text_is_left_alone(tmp_path):
    rows = [{"system": {"model": "x"}, "prompt": "2+2?", "chosen": "4", "rejected": "5"}]
    loaded = load(write_jsonl(tmp_path / "d.jsonl", rows))
    assert "system" not in loaded.report.columns and loaded.report.format == "standard"


# ---------------------------------------------------------------------------------
# Wrong column names (issue 15 item 9): the facts, and a mapping to offer
# ---------------------------------------------------------------------------------

def test_wrong_columns_in_parquet_name_what_is_needed_and_what_is_there(tmp_path):
    path = tmp_path / "qa.parquet"
    pq.write_table(pa.table({"question": ["2+2?"], "good": ["4"], "bad": ["5"]}), path)
    with pytest.raises(MissingColumnsError) as raised:
        load_dataset(str(path))
    error = raised.value
    assert "needs prompt (question)/chosen/rejected; the file has: question, good, bad" not in error.message
    assert "needs prompt/chosen/rejected; the file has: question, good, bad" in error.message
    assert error.found == ["question", "good", "bad"]
    assert error.suggestion == {"prompt": "question", "chosen": "good", "rejected": "bad"}
    assert error.hint == "pass --prompt-col question --chosen-col good --rejected-col bad"


def test_wrong_columns_in_json_lines_give_the_same_facts_in_the_report(tmp_path):
    rows = [{"question": "2+2?", "good": "4", "bad": "5"}, {"question": "hi", "good": "hello", "bad": "go"}]
    report = load(write_jsonl(tmp_path / "qa.jsonl", rows)).report
    assert report.loaded == 0 and report.file_columns == ["question", "good", "bad"]
    assert report.nothing_usable_hint() == ("needs prompt/chosen/rejected; the file has: question, good, bad; "
                                            "pass --prompt-col question --chosen-col good --rejected-col bad")
    assert report.suggested_mapping() == {"prompt": "question", "chosen": "good", "rejected": "bad"}
    mapped = load(write_jsonl(tmp_path / "qa.jsonl", rows), prompt_col="question", chosen_col="good",
                  rejected_col="bad")
    assert mapped.report.loaded == 2


def test_distilabel_style_instruction_and_ratings(tmp_path):
    rows = [{"instruction": "2+2?", "chosen": "4", "rejected": "5", "chosen_rating": 5, "rejected_rating": 2},
            {"instruction": "hi", "chosen": "hello", "rejected": "go", "chosen_rating": 4, "rejected_rating": 4}]
    report = load(write_jsonl(tmp_path / "distilabel.jsonl", rows)).report
    assert report.columns["prompt"] == "instruction" and report.guessed_columns == ["prompt"]
    assert report.score_columns == [["chosen_rating", "rejected_rating"]] and report.tied_scores == 1


def test_a_workspace_made_before_role_text_conversion_keeps_its_text(tmp_path):
    from core.store.workspace import WORKSPACE_FILE, Workspace

    data = write_jsonl(tmp_path / "hh.jsonl", HH_ROWS[:3])
    Workspace.create(tmp_path / "new.dmtui", data)
    assert Workspace.open(tmp_path / "new.dmtui").load().report.role_text == "conversations"
    Workspace.create(tmp_path / "old.dmtui", data)
    recorded = json.loads((tmp_path / "old.dmtui" / WORKSPACE_FILE).read_text())
    del recorded["load_config"]["keep_role_text"], recorded["load_config"]["system_col"]  # as written before
    (tmp_path / "old.dmtui" / WORKSPACE_FILE).write_text(json.dumps(recorded))
    old = Workspace.open(tmp_path / "old.dmtui").load()
    assert old.report.role_text == "text" and old.report.format == "standard"
    row = HH_ROWS[2]
    cut = shared_text_prefix(row["chosen"], row["rejected"])
    assert old.pairs["pair_id"][2].as_py() == pair_id(row["chosen"][:cut], row["chosen"][cut:], row["rejected"][cut:])


def test_a_workspace_keeps_reading_role_marked_text_as_at_its_first_load(tmp_path):
    """One appended pair that is not a dialogue must not turn the file into text (nor its
    removal turn text into conversations): every unchanged pair keeps its pair_id."""
    from core.store.workspace import Workspace

    plain = {"chosen": "Plain text answer A", "rejected": "Plain text answer B"}
    data = tmp_path / "hh.jsonl"
    write_jsonl(data, HH_ROWS[:3])
    workspace = Workspace.create(tmp_path / "hh.dmtui", str(data))
    ids = workspace.load().pairs["pair_id"].to_pylist()
    assert Workspace.open(tmp_path / "hh.dmtui").load_config.role_text_decision == "hh"
    write_jsonl(data, HH_ROWS[:3] + [plain])
    reloaded = Workspace.open(tmp_path / "hh.dmtui", accept_changes=True).load()
    assert reloaded.pairs["pair_id"].to_pylist() == ids and reloaded.report.format == "conversational"
    assert dict(reloaded.report.rejected) == {"not_role_marked": 1}
    assert reloaded.report.rejections[0].location == "line 4" and "pair_ids stay" in reloaded.report.role_text_reason
    # the same options given again are the workspace's own, recorded decision or not
    assert Workspace.open_or_create(str(data), tmp_path / "hh.dmtui", LoadConfig(max_field_chars=1_000_000),
                                    accept_changes=True).load_config.role_text_decision == "hh"

    write_jsonl(data, HH_ROWS[:3] + [plain])
    text = Workspace.create(tmp_path / "text.dmtui", str(data))
    text_ids = text.load().pairs["pair_id"].to_pylist()
    assert text.load_config.role_text_decision == "text"
    write_jsonl(data, HH_ROWS[:3])
    again = Workspace.open(tmp_path / "text.dmtui", accept_changes=True).load()
    assert again.report.format == "standard" and again.pairs["pair_id"].to_pylist() == text_ids[:3]


@pytest.mark.parametrize("fast", [False, True])
def test_a_recorded_role_family_rejects_other_pairs_in_file_order(tmp_path, monkeypatch, fast):
    import core.data.loading

    monkeypatch.setattr(core.data.loading, "FAST_IMPORT", fast)
    vicuna = {"chosen": "USER: hi ASSISTANT: hello", "rejected": "USER: hi ASSISTANT: go"}
    rows = [HH_ROWS[0], {"chosen": "Plain answer A", "rejected": "Plain answer B"}, vicuna, HH_ROWS[1]]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    loaded = load(path, role_text_decision="hh")
    assert loaded.report.loaded == 2 and dict(loaded.report.rejected) == {"not_role_marked": 2}
    assert [r.detail for r in loaded.report.rejections] == [
        "does not read as a role-marked dialogue (hh)", "reads as vicuna dialogues, not hh"]
    path = write_jsonl(tmp_path / "strict.jsonl", [rows[1], HH_ROWS[0], {"chosen": None, "rejected": "x"}])
    with pytest.raises(LoadError, match="line 1.*not_role_marked"):
        load_dataset(path, LoadConfig(role_text_decision="hh", strict=True))
