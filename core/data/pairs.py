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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
        [("pair_id", pa.string()), ("row_index", pa.int64())] + [(name, field_type) for name in TEXT_FIELDS]
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


def pair_ids(
    prompt: pa.Array | pa.ChunkedArray,
    chosen: pa.Array | pa.ChunkedArray,
    rejected: pa.Array | pa.ChunkedArray,
    plain: bool = False,
) -> tuple[pa.Array, np.ndarray]:
    """`pair_id` of every row of three aligned columns (strings, or MESSAGE_TYPE lists):
    the ids as a string array, and the same 64 bits as uint64 keys (for finding duplicates).

    The canonical JSON text is built by Arrow kernels; only the hash runs once per row.
    Columns hold no nulls (they are loaded pairs). `plain` says that no text holds a
    character JSON escapes (a quote, a backslash, a control character), which a reader of
    JSON knows when the raw lines hold no backslash: the check for them is skipped.
    """
    if all(_is_text(column.type) for column in (prompt, chosen, rejected)):
        columns = [column.cast(pa.string()) for column in (prompt, chosen, rejected)]
        bodies = columns if plain else [_json_string_bodies(column) for column in columns]
        canonical = pc.binary_join_element_wise('["', bodies[0], '","', bodies[1], '","', bodies[2], '"]', "")
    else:
        canonical = pc.binary_join_element_wise(
            "[", canonical_json(prompt), ",", canonical_json(chosen), ",", canonical_json(rejected), "]", ""
        )
    chunks = canonical.chunks if isinstance(canonical, pa.ChunkedArray) else [canonical]
    digests = b"".join(_blake2b_64(chunk.cast(pa.string())) for chunk in chunks)
    count = len(canonical)
    ids = pa.StringArray.from_buffers(
        count,
        pa.py_buffer(np.arange(0, 16 * count + 1, 16, dtype=np.int32)),
        pa.py_buffer(digests.hex().encode("ascii")),
    )
    return ids, np.frombuffer(digests, dtype=">u8").astype(np.uint64)


def _is_text(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _blake2b_64(texts: pa.Array) -> bytes:
    """The 8-byte BLAKE2b digest of each string of `texts`, concatenated."""
    if not len(texts):
        return b""
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset : texts.offset + len(texts) + 1].tolist()
    data = memoryview(texts.buffers()[2] or b"")
    blake2b = hashlib.blake2b
    return b"".join([blake2b(data[start:end], digest_size=8).digest() for start, end in zip(offsets, offsets[1:])])


_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'
_RARE_CONTROL = r"[\x00-\x07\x0b\x0e-\x1f]"
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\x08", "\\b"), ("\x0c", "\\f"))


def _json_string_bodies(texts: pa.Array) -> pa.Array:
    """Each string as `json.dumps(text, ensure_ascii=False)` writes it, without the quotes."""
    needs = pc.fill_null(pc.match_substring_regex(texts, _NEEDS_ESCAPE), False)
    if not pc.any(needs).as_py():
        return texts
    if isinstance(texts, pa.ChunkedArray):
        texts, needs = texts.combine_chunks(), needs.combine_chunks()
    original = texts.filter(needs)
    subset = original
    for raw, escaped in _ESCAPES:
        subset = pc.replace_substring(subset, raw, escaped)
    rare = np.flatnonzero(pc.match_substring_regex(original, _RARE_CONTROL).to_numpy(zero_copy_only=False))
    if rare.size:  # other control characters become \u00XX: few texts hold one
        values = subset.to_pylist()
        for position in rare.tolist():
            values[position] = json.dumps(original[int(position)].as_py(), ensure_ascii=False)[1:-1]
        subset = pa.array(values, texts.type)
    return pc.replace_with_mask(texts, needs, subset)


def canonical_json(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each field as compact JSON, as `pair_id` writes it inside its list."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if _is_text(column.type):
        return pc.binary_join_element_wise('"', _json_string_bodies(column.cast(pa.string())), '"', "")
    messages = pc.list_flatten(column)
    objects = pc.binary_join_element_wise(
        '{"role":"',
        _json_string_bodies(pc.struct_field(messages, "role")),
        '","content":"',
        _json_string_bodies(pc.struct_field(messages, "content")),
        '"}',
        "",
    )
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, objects), ",")
    return pc.binary_join_element_wise("[", joined, "]", "")


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
