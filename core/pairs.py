"""The normalised pair: what every stage after loading works on.

A loaded dataset becomes an Arrow table with the columns in `PAIR_SCHEMA_FIELDS`:
``pair_id`` (stable content hash), ``row_index`` (position in the source), and
``prompt`` / ``chosen`` / ``rejected``. In the *standard* format these are strings; in
the *conversational* format they are lists of ``{"role", "content"}`` messages, e.g.::

    {"prompt":   [{"role": "user", "content": "What is 2+2?"}],
     "chosen":   [{"role": "assistant", "content": "4."}],
     "rejected": [{"role": "assistant", "content": "5."}]}

Helpers here are small and pure so the loader, scoring and the app agree on them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import pyarrow as pa

Format = Literal["standard", "conversational"]
Message = dict[str, str]
Field = str | list[Message]

MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
RESPONSE_FIELDS = ("chosen", "rejected")
TEXT_FIELDS = ("prompt", "chosen", "rejected")


def pair_schema(fmt: Format) -> pa.Schema:
    """Arrow schema of the normalised pair table for one format."""
    field_type = pa.string() if fmt == "standard" else MESSAGE_TYPE
    return pa.schema(
        [("pair_id", pa.string()), ("row_index", pa.int64())]
        + [(name, field_type) for name in TEXT_FIELDS]
    )


def pair_id(prompt: Field, chosen: Field, rejected: Field) -> str:
    """Stable 64-bit content hash of a pair, as 16 hex digits.

    The same content always gives the same id, whatever file or row it came from, so
    scores and annotations keyed by it survive re-loading, re-ordering and appending.

    >>> pair_id("2+2?", "4", "5")
    '70bca6d91a505f7f'
    >>> pair_id("2+2?", "4", "5") == pair_id("2+2?", "5", "4")
    False
    """
    canonical = json.dumps([prompt, chosen, rejected], ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=8).hexdigest()


def is_conversation(value: Any) -> bool:
    """True for a list of message dicts (the conversational format).

    >>> is_conversation([{"role": "user", "content": "hi"}])
    True
    >>> is_conversation("hi")
    False
    """
    return isinstance(value, list) and len(value) > 0 and all(isinstance(m, dict) for m in value)


def shared_text_prefix(chosen: str, rejected: str) -> int:
    """Length of the prompt shared by two whole texts (the implicit-prompt format).

    The split is moved back to a whitespace boundary so that a word both responses
    start with is not cut in two; the whitespace goes to the responses, as tokenizers
    attach a leading space to the following word.

    >>> c, r = "Human: hi\\n\\nAssistant: good day", "Human: hi\\n\\nAssistant: go away"
    >>> n = shared_text_prefix(c, r); c[:n], c[n:], r[n:]
    ('Human: hi\\n\\nAssistant:', ' good day', ' go away')
    >>> shared_text_prefix("Q: hi A: yes", "Q: hi A: yes indeed")  # chosen left empty
    12
    """
    limit = min(len(chosen), len(rejected))
    n = 0
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    if n == limit:
        if len(chosen) == len(rejected):
            return n
        # One text is a prefix of the other: the next character is the longer one's.
        following = (chosen if len(chosen) > n else rejected)[n]
    else:
        following = chosen[n]
    while n > 0 and not chosen[n - 1].isspace() and not following.isspace():
        n -= 1
        following = chosen[n]
    while n > 0 and chosen[n - 1].isspace():
        n -= 1
    return n


def shared_message_prefix(chosen: list[Message], rejected: list[Message]) -> int:
    """Number of leading messages two conversations share (their implicit prompt).

    >>> u = {"role": "user", "content": "hi"}
    >>> shared_message_prefix([u, {"role": "assistant", "content": "hello"}],
    ...                       [u, {"role": "assistant", "content": "go away"}])
    1
    """
    n = 0
    for left, right in zip(chosen, rejected):
        if left != right:
            break
        n += 1
    return n


def as_text(value: Field) -> str:
    """Render a field for display or search: strings as they are, messages as 'role: content'.

    >>> as_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    'user: hi\\nassistant: yo'
    """
    if isinstance(value, str):
        return value
    return "\n".join(f"{m['role']}: {m['content']}" for m in value)
