"""Text that already carries a rendered chat template, and which template it is.

Some datasets store each prompt as a chat model saw it, special tokens included
(``<|begin_of_text|><|start_header_id|>user<|end_header_id|>...``, ``<s>[INST] ...``,
``<|im_start|>user ...``). Scoring must take such text as it is: applying a chat
template (or adding a BOS token) again would wrap the markup in a second copy of itself.

`rendered_template` names the family a text begins with; the loader counts the families
over the loaded prompts (`LoadReport.rendered_templates`), so a dataset's fact is one
look-up. One regular expression serves Python and Arrow (RE2), so the per-text answer
and the per-column count cannot disagree: it spells whitespace out, as ``\\s`` differs
between the two engines.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

_WS = "[ \\t\\r\\n]*"
TEMPLATE_FAMILIES: dict[str, tuple[str, str]] = {
    # family: (what it is, the markup a rendered prompt begins with, as a regex)
    "llama-3": ("Llama 3", r"<\|begin_of_text\|>|<\|start_header_id\|>"),
    "inst": ("Llama 2 / Mistral [INST]", r"(?:<s>" + _WS + r")?\[(?:INST|SYSTEM_PROMPT)\]"),
    "chatml": ("ChatML (Qwen, Phi-4, ...)", r"<\|im_start\|>"),
    "gemma": ("Gemma", r"(?:<bos>" + _WS + r")?<start_of_turn>"),
    "zephyr": ("Zephyr / Tulu / Phi-3 <|user|>", r"(?:<s>" + _WS + r")?<\|(?:system|user)\|>"),
    "deepseek": ("DeepSeek", "<\uff5cbegin\u2581of\u2581sentence\uff5c>"),
    "command-r": ("Command R", r"<BOS_TOKEN>|<\|START_OF_TURN_TOKEN\|>"),
    "bos": ("a BOS token (<s>, <bos>) without a known template", r"<s>|<bos>"),
}
"""Tried in this order: a more specific family before ``bos``, which only says the text
starts with a BOS token (still not to be added twice)."""

_PATTERN = (
    "^"
    + _WS
    + "(?:"
    + "|".join(f"(?P<{name.replace('-', '_')}>{regex})" for name, (_, regex) in TEMPLATE_FAMILIES.items())
    + ")"
)
_COMPILED = re.compile(_PATTERN)
_START = "^" + _WS + "[<\\[]"
"""Every family's markup starts with "<" or "[" (checked by a test)."""
_GROUPS = {name.replace("-", "_"): name for name in TEMPLATE_FAMILIES}


def rendered_template(text: str) -> str | None:
    """The family of chat template whose markup `text` begins with, or None.

    >>> rendered_template("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nhi")
    'llama-3'
    >>> rendered_template("<s>[INST] hi [/INST]"), rendered_template("<|im_start|>user\\nhi")
    ('inst', 'chatml')
    >>> rendered_template("Human: hi") is None
    True
    """
    match = _COMPILED.match(text)
    return _GROUPS[match.lastgroup] if match and match.lastgroup else None


def count_rendered_templates(texts: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """How many of `texts` begin with each family's markup (families found only).

    The same answer as `rendered_template` per text, computed by Arrow over the column.
    """
    if len(texts) == 0:
        return {}
    maybe = pc.fill_null(pc.match_substring_regex(texts, _START), False)  # a cheap look at the first character
    if not pc.any(maybe).as_py():
        return {}
    found = pc.extract_regex(texts.filter(maybe), _PATTERN)
    counts: dict[str, int] = {}
    for group, family in _GROUPS.items():
        hits = pc.sum(pc.greater(pc.utf8_length(pc.struct_field(found, group)), 0)).as_py() or 0
        if hits:
            counts[family] = hits
    return counts
