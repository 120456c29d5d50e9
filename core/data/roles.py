"""Plain-text dialogues whose turns are marked by role names ("role-marked text").

Many preference datasets store a conversation as one string, each turn introduced by a
marker: Anthropic HH-RLHF writes ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``, Alpaca-style
data ``"### Instruction: ... ### Response: ..."``, Vicuna ``"USER: ... ASSISTANT: ..."``.
This module finds those turns, so that

- a whole dialogue pair (HH: ``chosen`` and ``rejected`` each the full conversation) is
  split where the last assistant turn begins: the prompt is everything up to and
  including that turn's marker, each response is what follows it. The shared-beginning
  rule used for other texts would cut inside the reply when both replies start with the
  same word ("Assistant: I'm" + "not sure" / "sorry");
- a dialogue can become a conversation (``[{"role", "content"}, ...]``), so that scoring
  applies each model's own chat template instead of feeding it foreign markers.

A marker counts only where it starts a line (or the text), except Vicuna's upper-case
``USER:`` / ``ASSISTANT:``, which follow any whitespace; a pair that does not split so
is read again with markers only after a blank line (a reply may quote a dialogue). Text
before the first marker (Alpaca's "Below is an instruction ...") is a system turn. A
dialogue is well formed when its turns alternate, starting with the user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.data.pairs import Message


@dataclass(frozen=True)
class RoleMarkers:
    """One family of plain-text role markers."""

    name: str
    label: str
    user: str
    assistant: str
    line_start: bool = True
    """Markers count only at the start of a line (else after any whitespace)."""

    @property
    def pattern(self) -> re.Pattern[str]:
        before = r"(?:^|(?<=\n))" if self.line_start else r"(?:^|(?<=\s))"
        return self._markers_after(before)

    @property
    def paragraph_pattern(self) -> re.Pattern[str]:
        """Markers only at the text start or after a blank line (HH's "\\n\\nHuman:")."""
        return self._markers_after(r"(?:^|(?<=\n\n))")

    def _markers_after(self, before: str) -> re.Pattern[str]:
        return re.compile(f"{before}(?:(?P<user>{re.escape(self.user)})|(?P<assistant>{re.escape(self.assistant)}))")


FAMILIES: tuple[RoleMarkers, ...] = (
    RoleMarkers("guanaco", '"### Human:" / "### Assistant:" (OpenAssistant Guanaco)', "### Human:", "### Assistant:"),
    RoleMarkers("alpaca", '"### Instruction:" / "### Response:" (Alpaca)', "### Instruction:", "### Response:"),
    RoleMarkers("hh", '"Human:" / "Assistant:" (Anthropic HH-RLHF)', "Human:", "Assistant:"),
    RoleMarkers("user-assistant", '"User:" / "Assistant:"', "User:", "Assistant:"),
    RoleMarkers("vicuna", '"USER:" / "ASSISTANT:" (Vicuna)', "USER:", "ASSISTANT:", line_start=False),
)
"""Tried in this order; the first family that reads a text as a well-formed dialogue wins."""
BY_NAME = {family.name: family for family in FAMILIES}
_PATTERNS = {family.name: family.pattern for family in FAMILIES}
_PARAGRAPH_PATTERNS = {family.name: family.paragraph_pattern for family in FAMILIES if family.line_start}

ANY_MARKER = "|".join(
    dict.fromkeys(marker.removeprefix("### ") for family in FAMILIES for marker in (family.user, family.assistant))
)
"""A regular expression (Python and RE2 alike) that every role-marked text matches, and
most other texts do not: those need no parsing."""


@dataclass(frozen=True)
class Turn:
    role: str
    """"system", "user" or "assistant"."""
    marker_start: int
    marker_end: int
    """Where the marker is in the text (both equal the text start for a system preamble)."""
    end: int
    """Where the turn's text ends (the next marker, or the end of the text)."""


@dataclass(frozen=True)
class Dialogue:
    """A text read as turns of one marker family."""

    family: str
    text: str
    turns: tuple[Turn, ...]

    def content(self, turn: Turn) -> str:
        return self.text[turn.marker_end : turn.end].strip()

    @property
    def ends_with_assistant(self) -> bool:
        return self.turns[-1].role == "assistant"

    def messages(self, turns: tuple[Turn, ...] | None = None) -> list[Message]:
        """The turns as chat messages, contents stripped of the whitespace around them."""
        return [{"role": turn.role, "content": self.content(turn)} for turn in (self.turns if turns is None else turns)]


def parse_dialogue(
    text: str, family: str | None = None, patterns: dict[str, re.Pattern[str]] = _PATTERNS
) -> Dialogue | None:
    """`text` as a well-formed dialogue of `family` (or of the first family that fits), else None.

    >>> d = parse_dialogue("\\n\\nHuman: hi\\n\\nAssistant: hello")
    >>> d.family, [t.role for t in d.turns], d.messages()[1]
    ('hh', ['user', 'assistant'], {'role': 'assistant', 'content': 'hello'})
    >>> parse_dialogue("Below is a task.\\n\\n### Instruction:\\nAdd 2+2\\n\\n### Response:\\n").messages()[0]
    {'role': 'system', 'content': 'Below is a task.'}
    >>> parse_dialogue("The Assistant: said hi") is None  # not at a line start
    True
    """
    families = (BY_NAME[family],) if family else FAMILIES
    for markers in families:
        if markers.name not in patterns:
            continue
        dialogue = _parse(text, markers, patterns[markers.name])
        if dialogue is not None:
            return dialogue
    return None


def _parse(text: str, markers: RoleMarkers, pattern: re.Pattern[str]) -> Dialogue | None:
    found = list(pattern.finditer(text))
    if not found:
        return None
    turns: list[Turn] = []
    if text[: found[0].start()].strip():
        turns.append(Turn("system", 0, 0, found[0].start()))
    for position, match in enumerate(found):
        role = "user" if match.group("user") is not None else "assistant"
        expected = "user" if position % 2 == 0 else "assistant"
        if role != expected:
            return None
        end = found[position + 1].start() if position + 1 < len(found) else len(text)
        turns.append(Turn(role, match.start(), match.end(), end))
    return Dialogue(markers.name, text, tuple(turns))


@dataclass(frozen=True)
class DialogueSplit:
    """A role-marked pair split at its last assistant turn."""

    family: str
    prompt: str
    """The shared text up to and including the last assistant marker."""
    chosen: str
    rejected: str
    messages: tuple[list[Message], list[Message], list[Message]]
    """The same pair as a conversation: prompt messages, chosen and rejected replies."""


class Unsplittable(ValueError):
    """Both texts are role-marked, but not as one dialogue with two different last replies."""


def split_dialogues(chosen: str, rejected: str) -> DialogueSplit | None:
    """Split two role-marked dialogues where their last assistant turn begins.

    None when the texts are not role-marked dialogues of one family (another rule
    applies); `Unsplittable` when they are, but differ before their last reply or do
    not end with one.

    >>> s = split_dialogues("\\n\\nHuman: hi?\\n\\nAssistant: I'm not sure.",
    ...                     "\\n\\nHuman: hi?\\n\\nAssistant: I'm sorry.")
    >>> s.prompt, s.chosen, s.rejected
    ('\\n\\nHuman: hi?\\n\\nAssistant:', " I'm not sure.", " I'm sorry.")
    >>> s.messages[0]
    [{'role': 'user', 'content': 'hi?'}]

    A reply may quote a dialogue ("Human: hi" at a line start inside it). When the markers
    at every line start do not split the pair, those at paragraph starts (after a blank
    line, as HH separates turns) are tried before the pair is given up as unsplittable.
    """
    try:
        return _split_dialogues(chosen, rejected, _PATTERNS)
    except Unsplittable:
        try:
            split = _split_dialogues(chosen, rejected, _PARAGRAPH_PATTERNS)
        except Unsplittable:
            split = None
        if split is None:
            raise
        return split


def _split_dialogues(chosen: str, rejected: str, patterns: dict[str, re.Pattern[str]]) -> DialogueSplit | None:
    chosen_dialogue = parse_dialogue(chosen, patterns=patterns)
    if chosen_dialogue is None or not any(turn.role == "assistant" for turn in chosen_dialogue.turns):
        return None
    rejected_dialogue = parse_dialogue(rejected, chosen_dialogue.family, patterns)
    if rejected_dialogue is None:
        return None
    for name, dialogue in (("chosen", chosen_dialogue), ("rejected", rejected_dialogue)):
        if not dialogue.ends_with_assistant:
            raise Unsplittable(
                f"the {name} dialogue ends with a {dialogue.turns[-1].role} turn, not an assistant reply"
            )
    last_chosen, last_rejected = chosen_dialogue.turns[-1], rejected_dialogue.turns[-1]
    prompt = chosen[: last_chosen.marker_end]
    if rejected[: last_rejected.marker_end] != prompt:
        turn = next(
            (
                i
                for i, (a, b) in enumerate(zip(chosen_dialogue.turns, rejected_dialogue.turns))
                if chosen[a.marker_start : a.end] != rejected[b.marker_start : b.end]
            ),
            None,
        )
        where = f"turn {turn + 1}" if turn is not None else "the number of turns"
        raise Unsplittable(f"chosen and rejected differ before their last assistant turn ({where})")
    messages = (
        chosen_dialogue.messages(chosen_dialogue.turns[:-1]),
        chosen_dialogue.messages(chosen_dialogue.turns[-1:]),
        rejected_dialogue.messages(rejected_dialogue.turns[-1:]),
    )
    return DialogueSplit(
        chosen_dialogue.family, prompt, chosen[last_chosen.marker_end :], rejected[last_rejected.marker_end :], messages
    )


def prompt_as_messages(prompt: str, responses: tuple[str, ...]) -> tuple[str, list[Message]] | None:
    """An explicit role-marked prompt as (family, messages), when the pair reads as a dialogue.

    The prompt must be a well-formed dialogue ending with an empty assistant turn (the
    marker the reply follows) or a user turn, and no response may hold a marker of its
    family at a line start (a response that carries later turns is not one reply).

    >>> prompt_as_messages("### Instruction:\\nAdd 2+2\\n\\n### Response:\\n", ("4",))
    ('alpaca', [{'role': 'user', 'content': 'Add 2+2'}])
    >>> prompt_as_messages("USER: hi ASSISTANT: hello", ("x",)) is None  # the assistant turn is not empty
    True
    """
    dialogue = parse_dialogue(prompt)
    if dialogue is None:
        return None
    turns = dialogue.turns
    if turns[-1].role == "assistant":
        if dialogue.content(turns[-1]):
            return None
        turns = turns[:-1]
    if not turns or turns[-1].role != "user":
        return None
    pattern = _PATTERNS[dialogue.family]
    if any(pattern.search(response) for response in responses):
        return None
    return dialogue.family, dialogue.messages(turns)
