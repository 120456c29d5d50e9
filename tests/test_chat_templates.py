"""Text that already carries a rendered chat template: detected per text and per dataset."""

from __future__ import annotations

import json
import re

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from core.data.chat_templates import TEMPLATE_FAMILIES, count_rendered_templates, rendered_template
from core.data.loading import LoadReport, load_dataset

# Prompts as each family's chat template renders them (add_generation_prompt=True).
RENDERED = {
    "llama-3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "inst": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2+2? [/INST]",
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
              "<|im_start|>assistant\n",
    "gemma": "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "zephyr": "<|system|>\nBe brief.</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n",
    "deepseek": "<\uff5cbegin\u2581of\u2581sentence\uff5c>User: What is 2+2?\n\nAssistant:",
    "command-r": "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|USER_TOKEN|>What is 2+2?<|END_OF_TURN_TOKEN|>",
    "bos": "<s> What is 2+2?",
}


def test_every_family_is_recognised_by_its_rendered_prompt():
    assert set(RENDERED) == set(TEMPLATE_FAMILIES)
    for family, text in RENDERED.items():
        assert rendered_template(text) == family, family
        assert rendered_template("\n  " + text) == family  # leading whitespace is allowed
    assert count_rendered_templates(pa.array(list(RENDERED.values()))) == {family: 1 for family in RENDERED}


def test_plain_and_role_marked_text_carries_no_template():
    for text in ("What is 2+2?", "\n\nHuman: hi\n\nAssistant:", "### Instruction:\nhi\n\n### Response:",
                 "USER: hi ASSISTANT:", "Use <|im_start|> to start a turn", "<sys>x", "[INST"):
        assert rendered_template(text) is None, text


markup = st.sampled_from(["<s>", "<bos>", "[INST]", "<|im_start|>", "<start_of_turn>", "<|user|>", " ", "\n",
                          "\t", "\u3000", "<|begin_of_text|>", "x", "<", "|", "\u00a0"])


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.lists(markup, max_size=4).map("".join) | st.text(max_size=6), max_size=12))
def test_the_column_count_agrees_with_the_per_text_answer(texts):
    expected: dict[str, int] = {}
    for text in texts:
        family = rendered_template(text)
        if family is not None:
            expected[family] = expected.get(family, 0) + 1
    assert count_rendered_templates(pa.array(texts, pa.string())) == expected


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def test_a_dataset_of_rendered_prompts_is_reported_once_for_scoring(tmp_path):
    rows = [{"prompt": RENDERED["llama-3"].replace("2+2", f"{i}+{i}"), "chosen": f"{2 * i}<|eot_id|>",
             "rejected": f"{2 * i + 1}<|eot_id|>"} for i in range(5)]
    report = load_dataset(_write(tmp_path / "rendered.jsonl", rows)).report
    assert report.rendered_templates == {"llama-3": 5}
    assert report.rendered_template == "llama-3"
    assert any("rendered chat template" in warning for warning in report.warnings)
    assert LoadReport.from_json(report.to_json()).rendered_template == "llama-3"


def test_a_mixed_dataset_names_no_single_template(tmp_path):
    rows = [{"prompt": RENDERED["chatml"], "chosen": "4", "rejected": "5"},
            {"prompt": "What is 3+3?", "chosen": "6", "rejected": "7"}]
    report = load_dataset(_write(tmp_path / "mixed.jsonl", rows)).report
    assert report.rendered_templates == {"chatml": 1}
    assert report.rendered_template is None
    assert any("1 of 2 prompts" in warning for warning in report.warnings)


def test_conversations_are_checked_on_their_first_message(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": RENDERED["chatml"]}],
             "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}]
    report = load_dataset(_write(tmp_path / "conv.jsonl", rows)).report
    assert report.rendered_templates == {"chatml": 1}


def test_plain_data_reports_no_template(tmp_path):
    rows = [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}]
    report = load_dataset(_write(tmp_path / "plain.jsonl", rows)).report
    assert report.rendered_templates == {} and report.rendered_template is None
    assert report.warnings == []


def test_doctests():
    import doctest

    import core.data.chat_templates

    assert doctest.testmod(core.data.chat_templates).failed == 0


def test_every_family_starts_with_a_bracket_for_the_quick_look():
    from core.data.chat_templates import _START

    for text in RENDERED.values():
        assert re.match(_START, text), text
