"""Which columns hold the pair, and how one record becomes (prompt, chosen, rejected).

The shapes a dataset can have, and the rule each pair's prompt was found by:

- prompt, chosen and rejected columns of one kind: strings (``standard``) or message
  lists (``conversational``); the prompt is the prompt column as given;
- a string prompt beside message-list responses (UltraFeedback-binarized): the prompt is
  the messages both responses start with (the user turn they repeat), as TRL's
  ``maybe_extract_prompt`` does; when the responses hold only the replies, the prompt
  string becomes the user turn;
- a system column (Orca-DPO-pairs: ``system``, ``question``, ``chosen``, ``rejected``):
  conversations whose prompt starts with the system message (none when it is blank);
- no prompt column (implicit prompt): role-marked dialogues (core.data.roles) are cut where
  their last assistant turn begins; other texts at their longest shared beginning, moved
  back to a word boundary; conversations at the messages they share.

`RowNormaliser` is the reference for every row: the vectorised checks of the fast
import (core.data.arrow_rows) hand it every row they cannot vouch for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from core.data.pairs import Format, Message, is_conversation, shared_message_prefix, shared_text_prefix
from core.data.roles import ANY_MARKER, Unsplittable, prompt_as_messages, split_dialogues
from core.errors import LoadError

PROMPT_RULES: dict[str, str] = {
    "prompt_column": "the prompt column, as given",
    "prompt_as_user_turn": "the prompt column became the user turn before the replies",
    "shared_messages": "the leading messages chosen and rejected share",
    "last_assistant_turn": "the role-marked dialogue, cut where its last assistant turn begins",
    "shared_beginning": "the longest beginning the two texts share, moved back to a word boundary",
    "role_marked_prompt": "the prompt column, read as role-marked turns",
    "instruction_and_input": "the instruction column, then the input column after a blank line (Alpaca)",
}
"""How a pair's prompt was found; keys of `LoadReport.prompt_rules` (an API, like REASONS)."""

PROMPT_COLUMNS = ("prompt", "question", "instruction")
"""Column names taken as the prompt, in this order, when --prompt-col is not given."""
SYSTEM_COLUMN = "system"
"""Taken as the system column when the data has a prompt column and this holds text."""
ALPACA_COLUMNS = ("instruction", "input")
"""Alpaca's prompt is two columns: an `instruction` prompt column is followed by the row's
`input` (the text the instruction is about), after a blank line, where that is not empty."""
COLUMN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "question", "instruction", "query", "input", "context", "history"),
    "chosen": (
        "chosen",
        "good",
        "accepted",
        "preferred",
        "better",
        "winner",
        "positive",
        "chosen_response",
        "response_chosen",
        "response_j",
        "answer_chosen",
    ),
    "rejected": (
        "rejected",
        "bad",
        "dispreferred",
        "worse",
        "loser",
        "negative",
        "rejected_response",
        "response_rejected",
        "response_k",
        "answer_rejected",
    ),
}
"""Names a column of each role often has, for suggesting a mapping."""


PAIR_ROLES = ("prompt", "chosen", "rejected")
"""Roles read as the pair's fields; the others (system, input) add to the prompt."""


class RowRejected(Exception):
    def __init__(self, reason: str, column: str | None, detail: str) -> None:
        super().__init__(reason)
        self.reason, self.column, self.detail = reason, column, detail


class MissingColumnsError(LoadError):
    """A file whose columns do not include the ones the pair needs (a mapping error)."""

    def __init__(self, source: str, missing: list[str], required: list[str], found: list[str]) -> None:
        self.missing, self.required, self.found = missing, required, found
        self.suggestion = suggest_mapping(found)
        absent = ", ".join(repr(column) for column in missing)
        super().__init__(
            f"{source}: column {absent} not found: {missing_columns_message(required, found)}",
            mapping_hint(self.suggestion),
        )


def missing_columns_message(required: list[str], found: list[str]) -> str:
    """'needs prompt/chosen/rejected; the file has: question, good, bad'."""
    return f"needs {'/'.join(required)}; the file has: {', '.join(found) or 'no columns'}"


def mapping_hint(suggestion: dict[str, str]) -> str:
    """The options that map the columns: the suggested ones, or placeholders."""
    if {"chosen", "rejected"} <= set(suggestion):
        return "pass " + " ".join(f"--{role}-col {column}" for role, column in suggestion.items())
    return "pass --prompt-col COL --chosen-col COL --rejected-col COL with the file's column names"


def suggest_mapping(columns: Iterable[str]) -> dict[str, str]:
    """Role -> column, for the roles whose column goes by a usual name (case ignored).

    >>> suggest_mapping(["question", "good", "bad", "id"])
    {'prompt': 'question', 'chosen': 'good', 'rejected': 'bad'}
    """
    by_lower = {column.lower(): column for column in columns}
    found: dict[str, str] = {}
    for role, names in COLUMN_SYNONYMS.items():
        column = next((by_lower[name] for name in names if name in by_lower), None)
        if column is not None and column not in found.values():
            found[role] = column
    return found


@dataclass(frozen=True)
class ColumnChoice:
    """The columns each role comes from, and which of them were guessed."""

    roles: dict[str, str]
    """prompt (absent: implicit prompt), input (Alpaca's, after an instruction prompt),
    system (optional), chosen, rejected."""
    guessed: tuple[str, ...] = ()
    """Roles whose column was picked by a usual name (question, system) rather than given."""


def choose_columns(
    keys: list[str],
    head: list[dict[str, Any]],
    *,
    prompt_col: str | None,
    chosen_col: str | None,
    rejected_col: str | None,
    system_col: str | None,
) -> tuple[ColumnChoice, list[str]]:
    """The columns to read, and the named ones the keys lack (an error for uniform sources)."""
    chosen = chosen_col or "chosen"
    rejected = rejected_col or "rejected"
    guessed: list[str] = []
    prompt = prompt_col
    if prompt is None:
        prompt = next((name for name in PROMPT_COLUMNS if name in keys and name not in (chosen, rejected)), None)
        if prompt not in (None, "prompt"):
            guessed.append("prompt")
    system = system_col
    if (
        system is None
        and prompt is not None
        and SYSTEM_COLUMN in keys
        and SYSTEM_COLUMN not in (chosen, rejected, prompt)
    ):
        values = [row.get(SYSTEM_COLUMN) for row in head]
        if all(value is None or isinstance(value, str) for value in values):
            system = SYSTEM_COLUMN
            guessed.append("system")
    missing = [c for c in (chosen, rejected, prompt_col, system_col) if c and c not in keys]
    roles = {"prompt": prompt} if prompt else {}
    if (
        (prompt, ALPACA_COLUMNS[1]) == ALPACA_COLUMNS
        and ALPACA_COLUMNS[1] in keys
        and ALPACA_COLUMNS[1] not in (chosen, rejected, system)
    ):
        roles["input"] = ALPACA_COLUMNS[1]
        guessed.append("input")
    if system:
        roles["system"] = system
    roles.update(chosen=chosen, rejected=rejected)
    return ColumnChoice(roles, tuple(guessed)), missing


@dataclass
class Normalised:
    """One record as a pair, and how its prompt was found."""

    prompt: Any
    chosen: Any
    rejected: Any
    rule: str
    role_family: str | None = None
    """The role-marker family, when the pair can also be read as a conversation."""
    messages: tuple[list[Message], list[Message], list[Message]] | None = None
    """That conversation (only with `role_family`)."""


@dataclass
class ShapeNotes:
    """Row facts the report sums up: system messages added, prompt columns that disagree."""

    system_messages: int = 0
    prompt_mismatch: int = 0
    first_mismatch: str | None = None


class RowNormaliser:
    """Validates records one at a time and turns them into normalised pairs."""

    def __init__(self, max_field_chars: int) -> None:
        self.max_field_chars = max_field_chars
        self.columns: dict[str, str] | None = None
        self.format: Format | None = None
        self.seen_keys: dict[str, None] = {}
        self.notes = ShapeNotes()

    @property
    def chosen_columns(self) -> dict[str, str]:
        """`columns`, which the reader chooses before the first record."""
        assert self.columns is not None, "the columns are chosen before the first record"
        return self.columns

    def normalise(self, value: Any, location: str) -> Normalised:
        """The pair of one record, or `RowRejected`. `columns` must be chosen first."""
        if not isinstance(value, dict):
            raise RowRejected("not_an_object", None, f"a JSON {type(value).__name__}, not an object")
        self.seen_keys.update(dict.fromkeys(value))
        columns = self.chosen_columns
        fields = {role: self._field(value, column) for role, column in columns.items() if role in PAIR_ROLES}
        system = self._system(value, columns["system"]) if "system" in columns else None
        chosen, rejected = fields["chosen"], fields["rejected"]
        if self.format is None:
            self.format = "conversational" if isinstance(chosen, list) or "system" in columns else "standard"
        self._check_kinds(fields)
        if chosen == rejected:
            raise RowRejected("identical_responses", columns["chosen"], "chosen equals rejected")
        if "prompt" not in fields:
            return self._split_implicit(chosen, rejected)
        prompt, rule = fields["prompt"], "prompt_column"
        if "input" in columns:
            prompt, rule = self._with_input(prompt, value, columns["input"])
        if self.format == "standard":
            return self._standard(prompt, chosen, rejected, rule)
        return self._conversation(prompt, chosen, rejected, system, location)

    def _with_input(self, prompt: Any, record: dict, column: str) -> tuple[Any, str]:
        """Alpaca's prompt: the instruction, then the row's input where it has one."""
        text = self._system(record, column)  # absent, null or blank: no input, as with a system message
        if text is None:
            return prompt, "prompt_column"
        if not isinstance(prompt, str):
            raise RowRejected("wrong_type", column, "an input beside a prompt that is not a string")
        joined = f"{prompt}\n\n{text}"
        self._check_size(len(joined), self.chosen_columns["prompt"])
        return joined, "instruction_and_input"

    def _check_kinds(self, fields: dict[str, Any]) -> None:
        """Strings or message lists, as the format wants. Conversations may have a string
        prompt (it precedes message-list replies); with a system column, string replies
        too (they become assistant messages), chosen and rejected of one kind."""
        conversational = self.format == "conversational"
        loose = "system" in self.chosen_columns
        for role, value in fields.items():
            is_list = isinstance(value, list)
            fits = (is_list or role == "prompt" or loose) if conversational else not is_list
            if not fits:
                expected = "a list of messages" if conversational else "a string"
                raise RowRejected(
                    "wrong_type", self.chosen_columns[role], f"expected {expected} like the rows before it"
                )
        if loose and isinstance(fields["chosen"], list) != isinstance(fields["rejected"], list):
            raise RowRejected("wrong_type", self.chosen_columns["rejected"], "chosen and rejected must be of one kind")

    def _standard(self, prompt: str, chosen: str, rejected: str, rule: str) -> Normalised:
        if re.search(ANY_MARKER, prompt):
            read = prompt_as_messages(prompt, (chosen, rejected))
            if read is not None:
                family, messages = read
                replies = ([_assistant(chosen)], [_assistant(rejected)])
                return Normalised(prompt, chosen, rejected, "role_marked_prompt", family, (messages, *replies))
        return Normalised(prompt, chosen, rejected, rule)

    def _conversation(self, prompt: Any, chosen: Any, rejected: Any, system: str | None, location: str) -> Normalised:
        if isinstance(chosen, str):
            chosen, rejected = [_assistant(chosen)], [_assistant(rejected)]
        rule = "prompt_column"
        if isinstance(prompt, str):
            shared = self._prompt_messages(chosen, rejected)
            if shared:
                head, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
                self._compare_prompt(prompt, head, location)
                prompt, rule = head, "shared_messages"
            else:
                prompt, rule = [{"role": "user", "content": prompt}], "prompt_as_user_turn"
        if system is not None and not (prompt[0]["role"] == "system" and prompt[0]["content"] == system):
            prompt = [{"role": "system", "content": system}, *prompt]
            self.notes.system_messages += 1
        for role, value in (("chosen", chosen), ("rejected", rejected)):
            if not _has_text(value):
                raise RowRejected("empty_field", self.chosen_columns[role], "nothing left after the shared prompt")
        return Normalised(prompt, chosen, rejected, rule)

    def _prompt_messages(self, chosen: list[Message], rejected: list[Message]) -> int:
        """How many leading messages both conversations share (the prompt). When one holds
        the whole other one, the shorter has no reply of its own: an empty field, not
        identical responses. (TRL's maybe_extract_prompt would cut one message earlier and
        make [u, a] / [u, a, u2] the replies [a] / [a, u2]: not a preference between replies.)"""
        shared = shared_message_prefix(chosen, rejected)
        if shared == min(len(chosen), len(rejected)):
            shorter = "chosen" if len(chosen) < len(rejected) else "rejected"
            raise RowRejected(
                "empty_field",
                self.chosen_columns[shorter],
                "no reply after the messages both conversations share (the other one continues it)",
            )
        return shared

    def _compare_prompt(self, prompt: str, head: list[Message], location: str) -> None:
        users = [m["content"] for m in head if m["role"] == "user"]
        if not users or users[-1].strip() != prompt.strip():
            self.notes.prompt_mismatch += 1
            self.notes.first_mismatch = self.notes.first_mismatch or location

    def _split_implicit(self, chosen: Any, rejected: Any) -> Normalised:
        rule = "shared_messages"
        if isinstance(chosen, list):
            shared = self._prompt_messages(chosen, rejected)
        else:
            split = None
            if re.search(ANY_MARKER, chosen):
                try:
                    split = split_dialogues(chosen, rejected)
                except Unsplittable as reason:
                    raise RowRejected("unsplittable_dialogue", self.chosen_columns["chosen"], str(reason)) from None
            if split is not None:
                pair = Normalised(
                    split.prompt, split.chosen, split.rejected, "last_assistant_turn", split.family, split.messages
                )
                self._check_replies(pair.chosen, pair.rejected)
                return pair
            shared, rule = shared_text_prefix(chosen, rejected), "shared_beginning"
        if shared == 0:
            raise RowRejected(
                "no_shared_prompt", self.chosen_columns["chosen"], "no common beginning to use as the prompt"
            )
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not _has_text(prompt):  # shared messages that are all blank, as an explicit prompt may not be
            raise RowRejected("empty_field", self.chosen_columns["chosen"], "the shared prompt messages are all empty")
        self._check_replies(chosen, rejected)
        return Normalised(prompt, chosen, rejected, rule)

    def _check_replies(self, chosen: Any, rejected: Any) -> None:
        for role, value in (("chosen", chosen), ("rejected", rejected)):
            if not _has_text(value):
                raise RowRejected("empty_field", self.chosen_columns[role], "nothing left after the shared prompt")

    def _field(self, record: dict, column: str) -> Any:
        if column not in record:
            raise RowRejected("missing_column", column, f"no {column!r} field")
        value = record[column]
        if value is None:
            raise RowRejected("null_field", column, "null")
        if isinstance(value, str):
            return self._text(value, column)
        if isinstance(value, list):
            return self._messages(value, column)
        raise RowRejected("wrong_type", column, f"a {type(value).__name__}, expected a string or a list of messages")

    def _system(self, record: dict, column: str) -> str | None:
        """The system message (or Alpaca input) of a row: absent, null or blank means none."""
        value = record.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise RowRejected("wrong_type", column, f"a {type(value).__name__}, expected a string")
        self._check_size(len(value), column)
        return value

    def _text(self, value: str, column: str) -> str:
        if not value.strip():
            raise RowRejected("empty_field", column, "empty or only whitespace")
        self._check_size(len(value), column)
        return value

    def _check_size(self, size: int, column: str) -> None:
        if size > self.max_field_chars:
            raise RowRejected(
                "field_too_large",
                column,
                f"{size:,} characters > limit {self.max_field_chars:,} (raise it with --max-field-chars)",
            )

    def _messages(self, value: list, column: str) -> list[Message]:
        if not value:
            raise RowRejected("empty_field", column, "an empty list of messages")
        if not is_conversation(value):
            raise RowRejected("bad_message", column, "the list holds something other than message objects")
        messages: list[Message] = []
        total = 0
        for position, message in enumerate(value):
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not isinstance(content, str):
                raise RowRejected("bad_message", column, f"message {position} needs string 'role' and 'content'")
            total += len(content)
            messages.append({"role": role, "content": content})
        self._check_size(total, column)
        if not _has_text(messages):
            raise RowRejected("empty_field", column, "every message is empty")
        return messages


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text.strip()}


def _has_text(value: str | list[Message]) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return any(m["content"].strip() for m in value)
