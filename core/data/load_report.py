"""What a load is asked (`LoadConfig`) and what it found (`LoadReport`).

The report is an API: `dmtui info --json` prints it, the workspace caches it, the app
shows it. Its counts always add up (read = loaded + rejected), every rejected row keeps
its location and reason, and it says which shape the data had and how each pair's
prompt was found, so a user can check the split before scoring.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from core.data.pairs import Format
from core.data.shapes import mapping_hint, missing_columns_message, suggest_mapping

PromptStyle = Literal["explicit", "implicit"]

# Stable reason identifiers: they are keys of the JSON report, so treat them as an API.
REASONS: dict[str, str] = {
    "malformed_json": "the line is not valid JSON",
    "malformed_csv": "the CSV row cannot be parsed",
    "invalid_utf8": "the bytes are not valid UTF-8",
    "not_an_object": "the record is not an object with named fields",
    "missing_column": "a required column is absent",
    "null_field": "a required field is null",
    "empty_field": "a required field is empty",
    "wrong_type": "a field has the wrong type",
    "bad_message": "a conversation message lacks a string role or content",
    "field_too_large": "a field is longer than the limit",
    "identical_responses": "chosen and rejected are identical",
    "no_shared_prompt": "implicit prompt: chosen and rejected share no beginning",
    "unsplittable_dialogue": "role-marked dialogues that differ before their last reply, or end without one",
    "not_role_marked": "the workspace reads role-marked dialogues as conversations; this pair is not one",
    "duplicate_pair": "the same prompt, chosen and rejected appeared earlier",
}

SHAPES: dict[str, str] = {
    "standard": "prompt, chosen and rejected strings",
    "conversational": "prompt, chosen and rejected message lists",
    "prompt_and_message_replies": "a string prompt and message-list replies that repeat it (UltraFeedback-binarized)",
    "system_column": "a system column beside the prompt (Orca-DPO-pairs)",
    "role_marked": "role-marked dialogues in chosen and rejected (HH-RLHF and kin)",
    "role_marked_prompt": "a role-marked prompt column (Alpaca / Vicuna style)",
    "instruction_and_input": "instruction and input columns, joined as the prompt (Alpaca)",
    "implicit_text": "whole texts in chosen and rejected, no prompt column",
    "implicit_conversation": "whole conversations in chosen and rejected, no prompt column",
}
"""What `LoadReport.shape` can be, in words."""

SCORE_COLUMN_PAIRS = (
    ("score_chosen", "score_rejected"),
    ("chosen_score", "rejected_score"),
    ("chosen_rating", "rejected_rating"),
    ("chosen_reward", "rejected_reward"),
)
"""Per-response score columns the report looks for (UltraFeedback, distilabel, Argilla)."""


@dataclass(frozen=True)
class LoadConfig:
    """How to read a dataset. Column names default to TRL's prompt / chosen / rejected."""

    prompt_col: str | None = None
    """Column holding the prompt (default ``prompt``, else ``question`` or ``instruction``);
    none in the data means the implicit-prompt format."""
    chosen_col: str | None = None
    """Column holding the preferred response (default ``chosen``)."""
    rejected_col: str | None = None
    """Column holding the dispreferred response (default ``rejected``)."""
    system_col: str | None = None
    """Column holding a system message put before the prompt (default ``system`` when the
    data has one holding text beside a prompt column)."""
    split: str | None = None
    """Split of a hub or save_to_disk dataset (default ``train``, or the only one)."""
    strict: bool = False
    """Stop at the first bad row instead of reporting and skipping it."""
    max_field_chars: int = 1_000_000
    """Fields longer than this many characters are rejected as ``field_too_large``."""
    keep_role_text: bool = False
    """Keep role-marked text (HH-RLHF "Human:" / "Assistant:" ...) as text, split at its
    last assistant turn, instead of turning it into conversations."""
    role_text_decision: str | None = None
    """What a workspace's first load made of role-marked text: "text", or the marker family
    (core.data.roles, e.g. "hh") read as conversations. Later loads keep it, so one appended or
    edited pair cannot turn the whole file from conversations into text (or back) and change
    every pair_id: under a family, a pair that does not read as its dialogue is rejected
    (`not_role_marked`). None: decided from the file (`with_role_decision`)."""

    @classmethod
    def from_recorded(cls, options: dict[str, Any]) -> LoadConfig:
        """Options a workspace or manifest recorded. One recorded before an option existed
        gets the behaviour it was made with: role-marked text stays text there, so its
        pair_ids, scores and annotations stay valid."""
        return cls(**{**LEGACY_OPTIONS, **options})

    def with_role_decision(self, report: LoadReport) -> LoadConfig:
        """This config with what `report`'s load made of role-marked text recorded (itself
        when there was none, or it was already recorded or asked for)."""
        if self.role_text_decision is not None or self.keep_role_text or report.role_text is None:
            return self
        decision = report.role_markers if report.role_text == "conversations" else "text"
        return replace(self, role_text_decision=decision)

    def mapping(self) -> dict[str, str]:
        """The user's explicit column choices, for the workspace and the manifest."""
        return {
            role: column
            for role, column in (
                ("prompt", self.prompt_col),
                ("system", self.system_col),
                ("chosen", self.chosen_col),
                ("rejected", self.rejected_col),
            )
            if column
        }


LEGACY_OPTIONS: dict[str, Any] = {"keep_role_text": True}


@dataclass(frozen=True)
class Rejection:
    """One row that did not load, and why."""

    reason: str
    location: str
    row_index: int
    column: str | None
    detail: str

    def describe(self, source: str) -> str:
        where = f"{source}:{self.location}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: {self.reason}: {self.detail}"


@dataclass
class LoadReport:
    """What loading found: counts that always add up, and every rejected row."""

    source: str
    source_kind: str = ""
    format: Format | None = None
    prompt_style: PromptStyle | None = None
    columns: dict[str, str] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)
    read: int = 0
    loaded: int = 0
    rejected: Counter = field(default_factory=Counter)
    rejections: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rendered_templates: dict[str, int] = field(default_factory=dict)
    """Chat-template family -> loaded pairs whose prompt already carries its markup
    (core.data.chat_templates); empty for plain text and ordinary conversations."""
    shape: str | None = None
    """One of `SHAPES`: the shape the data was read as."""
    prompt_rules: dict[str, int] = field(default_factory=dict)
    """Rule (`core.data.shapes.PROMPT_RULES`) -> loaded pairs whose prompt it found."""
    prompt_examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    """Rule -> the first pairs it split: location, end of the prompt, start of each reply."""
    role_markers: str | None = None
    """The role-marker family of role-marked text (core.data.roles), if any."""
    role_text: Literal["conversations", "text"] | None = None
    """What became of role-marked text, and `role_text_reason` says why."""
    role_text_reason: str = ""
    guessed_columns: list[str] = field(default_factory=list)
    """Roles whose column was picked by a usual name (``question``, ``system``), not given."""
    file_columns: list[str] = field(default_factory=list)
    """Every column (top-level key) the data has, in order of first appearance."""
    score_columns: list[list[str]] = field(default_factory=list)
    """Per-response score columns found, as [chosen_col, rejected_col] pairs."""
    tied_scores: int = 0
    """Loaded pairs whose two scores (the first of `score_columns`) are equal."""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def rendered_template(self) -> str | None:
        """The chat-template family every loaded prompt already carries, else None.

        Such text is scored as written: no second template, no second BOS. When
        `rendered_templates` is not empty but this is None, only some prompts carry one:
        decide per text with `core.data.chat_templates.rendered_template`.
        """
        if len(self.rendered_templates) == 1 and sum(self.rendered_templates.values()) == self.loaded > 0:
            return next(iter(self.rendered_templates))
        return None

    def first_locations(self, per_reason: int = 3) -> dict[str, list[str]]:
        """The first few locations of each rejection reason, for a short summary."""
        found: dict[str, list[str]] = {}
        for rejection in self.rejections:
            places = found.setdefault(rejection.reason, [])
            if len(places) < per_reason:
                places.append(rejection.location)
        return found

    def required_columns(self) -> list[str]:
        """The columns a pair needs, as roles (with the column name the user gave for one)."""
        wanted = {
            role: role if role in self.guessed_columns else self.columns.get(role, role)
            for role in ("prompt", "chosen", "rejected")
        }
        return [role if column == role else f"{role} ({column})" for role, column in wanted.items()]

    def suggested_mapping(self) -> dict[str, str]:
        """Role -> column of the file, for the columns that go by a usual name."""
        return suggest_mapping(self.file_columns)

    def nothing_usable_hint(self) -> str:
        """What to try when no row loaded."""
        if self.read == 0:
            return "the source holds no records"
        if self.rejected.get("missing_column", 0) * 2 >= self.read:
            return (
                f"{missing_columns_message(self.required_columns(), self.file_columns)}; "
                f"{mapping_hint(self.suggested_mapping())}"
            )
        return "every row was rejected: see the reasons above"

    def to_json(self, include_all: bool = False) -> dict[str, Any]:
        """The report as plain JSON types; `rejected` maps reason -> count.

        With `include_all`, every rejection is listed under ``rejections`` (the workspace
        cache keeps them); otherwise the first 20 appear under ``examples``.
        """
        listed = self.rejections if include_all else self.rejections[:20]
        return {
            "source": self.source,
            "source_kind": self.source_kind,
            "format": self.format,
            "prompt_style": self.prompt_style,
            "shape": self.shape,
            "columns": self.columns,
            "guessed_columns": self.guessed_columns,
            "extra_columns": self.extra_columns,
            "file_columns": self.file_columns,
            "required_columns": self.required_columns(),
            "suggested_mapping": self.suggested_mapping(),
            "read": self.read,
            "loaded": self.loaded,
            "rejected": dict(self.rejected),  # file order, as counted: a reopened workspace lists them alike
            "rejected_total": self.rejected_total,
            "first_locations": self.first_locations(),
            ("rejections" if include_all else "examples"): [asdict(r) for r in listed],
            "warnings": self.warnings,
            "rendered_templates": self.rendered_templates,
            "rendered_template": self.rendered_template,
            "prompt_rules": self.prompt_rules,
            "prompt_examples": self.prompt_examples,
            "role_markers": self.role_markers,
            "role_text": self.role_text,
            "role_text_reason": self.role_text_reason,
            "score_columns": self.score_columns,
            "tied_scores": self.tied_scores,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadReport:
        report = cls(
            source=data["source"],
            source_kind=data.get("source_kind", ""),
            format=data.get("format"),
            prompt_style=data.get("prompt_style"),
            columns=dict(data.get("columns", {})),
            extra_columns=list(data.get("extra_columns", [])),
            read=data["read"],
            loaded=data["loaded"],
            rejected=Counter(data.get("rejected", {})),
            warnings=list(data.get("warnings", [])),
            rendered_templates=dict(data.get("rendered_templates", {})),
            shape=data.get("shape"),
            prompt_rules=dict(data.get("prompt_rules", {})),
            prompt_examples={rule: list(examples) for rule, examples in data.get("prompt_examples", {}).items()},
            role_markers=data.get("role_markers"),
            role_text=data.get("role_text"),
            role_text_reason=data.get("role_text_reason", ""),
            guessed_columns=list(data.get("guessed_columns", [])),
            file_columns=list(data.get("file_columns", [])),
            score_columns=[list(pair) for pair in data.get("score_columns", [])],
            tied_scores=int(data.get("tied_scores", 0)),
        )
        report.rejections = [Rejection(**r) for r in data.get("rejections", data.get("examples", []))]
        return report
