"""Loading a preference dataset into normalised pairs, with a report of every rejected row.

Formats understood (TRL's names):

- standard: ``{"prompt": "2+2?", "chosen": "4", "rejected": "5"}``
- conversational: the same keys holding lists of ``{"role", "content"}`` messages
- implicit prompt: only ``chosen`` and ``rejected``, each a whole text or conversation;
  their shared beginning is split off as the prompt
- any of these under other column names, with ``LoadConfig.prompt_col`` and friends.

Every other column is kept: `LoadedDataset.records` holds each loaded row as the source
had it, aligned with `LoadedDataset.pairs`, so exports carry it through.

Policy: a bad row is reported (file, line or row, column, reason) and skipped; with
``strict=True`` the first one stops the load. Duplicates keep the first occurrence.
Rows read = loaded + rejected, always.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator, Literal

import pyarrow as pa
import pyarrow.compute as pc

from core.chat_templates import TEMPLATE_FAMILIES, count_rendered_templates
from core.errors import LoadError
from core.pairs import (
    Format,
    Message,
    is_conversation,
    pair_id,
    pair_schema,
    shared_message_prefix,
    shared_text_prefix,
)
from core.progress import ProgressFn, Reporter
from core.sources import (
    ARROW_KINDS,
    RawRecord,
    SourceSpec,
    guard_reading,
    iter_arrow_records,
    read_arrow_table,
    read_delimited,
    read_json_document,
    read_json_lines,
    resolve_source,
)
from core.tables import take_rows

PromptStyle = Literal["explicit", "implicit"]
COLUMN_SNIFF_RECORDS = 100

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
    "duplicate_pair": "the same prompt, chosen and rejected appeared earlier",
}


@dataclass(frozen=True)
class LoadConfig:
    """How to read a dataset. Column names default to TRL's prompt / chosen / rejected."""

    prompt_col: str | None = None
    """Column holding the prompt; absent from the data means the implicit-prompt format."""
    chosen_col: str | None = None
    """Column holding the preferred response (default ``chosen``)."""
    rejected_col: str | None = None
    """Column holding the dispreferred response (default ``rejected``)."""
    split: str | None = None
    """Split of a hub or save_to_disk dataset (default ``train``, or the only one)."""
    strict: bool = False
    """Stop at the first bad row instead of reporting and skipping it."""
    max_field_chars: int = 1_000_000
    """Fields longer than this many characters are rejected as ``field_too_large``."""

    def mapping(self) -> dict[str, str]:
        """The user's explicit column choices, for the workspace and the manifest."""
        return {
            role: column
            for role, column in (
                ("prompt", self.prompt_col),
                ("chosen", self.chosen_col),
                ("rejected", self.rejected_col),
            )
            if column
        }


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
    (core.chat_templates); empty for plain text and ordinary conversations."""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def rendered_template(self) -> str | None:
        """The chat-template family every loaded prompt already carries, else None.

        Scoring takes such text as it is (no second template, no second BOS). When
        `rendered_templates` is not empty but this is None, only some prompts carry one:
        decide per text with `core.chat_templates.rendered_template`.
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

    def nothing_usable_hint(self) -> str:
        """What to try when no row loaded."""
        if self.read == 0:
            return "the source holds no records"
        if self.rejected.get("missing_column", 0) * 2 >= self.read:
            return "most rows lack a required column: name the columns with --prompt-col / --chosen-col / --rejected-col"
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
            "columns": self.columns,
            "extra_columns": self.extra_columns,
            "read": self.read,
            "loaded": self.loaded,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": self.rejected_total,
            "first_locations": self.first_locations(),
            ("rejections" if include_all else "examples"): [asdict(r) for r in listed],
            "warnings": self.warnings,
            "rendered_templates": self.rendered_templates,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LoadReport":
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
        )
        report.rejections = [Rejection(**r) for r in data.get("rejections", data.get("examples", []))]
        return report


@dataclass
class LoadedDataset:
    """Normalised pairs plus the source's own rows, aligned row for row."""

    pairs: pa.Table
    """pair_id, row_index, prompt, chosen, rejected (see core.pairs)."""
    records: pa.Table
    """The source's rows for the loaded pairs: the original columns for Arrow-backed and
    CSV sources; one ``_json`` column with each record's JSON text for JSON sources."""
    report: LoadReport
    numbers: pa.Table | None = None
    """JSON sources: every top-level field that held only numbers (or null), as float64
    columns aligned with `pairs`, so margin columns need no second parse of the JSON text.
    None for other sources, whose `records` are typed already."""

    @property
    def format(self) -> Format:
        assert self.report.format is not None
        return self.report.format


class _RowRejected(Exception):
    def __init__(self, reason: str, column: str | None, detail: str) -> None:
        super().__init__(reason)
        self.reason, self.column, self.detail = reason, column, detail


class _Normaliser:
    """Validates records one at a time and turns them into normalised pairs."""

    def __init__(self, config: LoadConfig, report: LoadReport) -> None:
        self.config = config
        self.report = report
        self.columns: dict[str, str] | None = None
        self.seen_keys: dict[str, None] = {}

    def resolve_columns(self, keys: Iterable[str], uniform: bool) -> None:
        """Pick the prompt/chosen/rejected columns.

        `uniform` sources (Arrow tables) have one schema, so a missing column is a
        mapping error for the whole file. JSON records may differ from row to row: there
        a missing column is reported per row, and the file fails only if no row loads.
        """
        keys = list(keys)
        chosen = self.config.chosen_col or "chosen"
        rejected = self.config.rejected_col or "rejected"
        prompt = self.config.prompt_col or ("prompt" if "prompt" in keys else None)
        missing = [c for c in (chosen, rejected, self.config.prompt_col) if c and c not in keys]
        if uniform and missing:
            raise LoadError(
                f"{self.report.source}: column {missing[0]!r} not found; the data has: {', '.join(keys) or 'no columns'}",
                "name the columns with --prompt-col / --chosen-col / --rejected-col",
            )
        self.columns = {"prompt": prompt} if prompt else {}
        self.columns.update(chosen=chosen, rejected=rejected)
        self.report.columns = dict(self.columns)
        self.report.prompt_style = "explicit" if prompt else "implicit"
        self.seen_keys.update(dict.fromkeys(keys))

    def normalise(self, value: Any) -> tuple[Any, Any, Any]:
        """(prompt, chosen, rejected) of one record, or `_RowRejected`."""
        if not isinstance(value, dict):
            raise _RowRejected("not_an_object", None, f"a JSON {type(value).__name__}, not an object")
        if self.columns is None:
            self.resolve_columns(value.keys(), uniform=False)
        assert self.columns is not None
        self.seen_keys.update(dict.fromkeys(value))
        fields = {role: self._field(value, role, column) for role, column in self.columns.items()}
        chosen, rejected = fields["chosen"], fields["rejected"]
        if self.report.format is None:
            self.report.format = "conversational" if isinstance(chosen, list) else "standard"
        want_list = self.report.format == "conversational"
        for role, value in fields.items():
            if isinstance(value, list) != want_list:
                expected = "a list of messages" if want_list else "a string"
                raise _RowRejected("wrong_type", self.columns[role], f"expected {expected} like the rows before it")
        if chosen == rejected:
            raise _RowRejected("identical_responses", self.columns["chosen"], "chosen equals rejected")
        if "prompt" in fields:
            return fields["prompt"], chosen, rejected
        return self._split_implicit(chosen, rejected)

    def _split_implicit(self, chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
        if isinstance(chosen, list):
            shared = shared_message_prefix(chosen, rejected)
            if shared == len(chosen) or shared == len(rejected):
                raise _RowRejected("identical_responses", self.columns["chosen"], "one conversation contains the other")
        else:
            shared = shared_text_prefix(chosen, rejected)
        if shared == 0:
            raise _RowRejected("no_shared_prompt", self.columns["chosen"], "no common beginning to use as the prompt")
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not _has_text(prompt):  # shared messages that are all blank, as an explicit prompt may not be
            raise _RowRejected("empty_field", self.columns["chosen"], "the shared prompt messages are all empty")
        for role, value in (("chosen", chosen), ("rejected", rejected)):
            if not _has_text(value):
                raise _RowRejected("empty_field", self.columns[role], "nothing left after the shared prompt")
        return prompt, chosen, rejected

    def _field(self, record: dict, role: str, column: str) -> Any:
        if column not in record:
            raise _RowRejected("missing_column", column, f"no {column!r} field")
        value = record[column]
        if value is None:
            raise _RowRejected("null_field", column, "null")
        if isinstance(value, str):
            return self._text(value, column)
        if isinstance(value, list):
            return self._messages(value, column)
        raise _RowRejected("wrong_type", column, f"a {type(value).__name__}, expected a string or a list of messages")

    def _text(self, value: str, column: str) -> str:
        if not value.strip():
            raise _RowRejected("empty_field", column, "empty or only whitespace")
        if len(value) > self.config.max_field_chars:
            raise _RowRejected(
                "field_too_large",
                column,
                f"{len(value):,} characters > limit {self.config.max_field_chars:,} (raise it with --max-field-chars)",
            )
        return value

    def _messages(self, value: list, column: str) -> list[Message]:
        if not value:
            raise _RowRejected("empty_field", column, "an empty list of messages")
        if not is_conversation(value):
            raise _RowRejected("bad_message", column, "the list holds something other than message objects")
        messages: list[Message] = []
        total = 0
        for position, message in enumerate(value):
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not isinstance(content, str):
                raise _RowRejected("bad_message", column, f"message {position} needs string 'role' and 'content'")
            total += len(content)
            messages.append({"role": role, "content": content})
        if total > self.config.max_field_chars:
            raise _RowRejected(
                "field_too_large",
                column,
                f"{total:,} characters > limit {self.config.max_field_chars:,} (raise it with --max-field-chars)",
            )
        if not _has_text(messages):
            raise _RowRejected("empty_field", column, "every message is empty")
        return messages


def _has_text(value: str | list[Message]) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return any(m["content"].strip() for m in value)


def load_dataset(
    source: str,
    config: LoadConfig = LoadConfig(),
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> LoadedDataset:
    """Read, validate and normalise a preference dataset.

    Raises `LoadError` when the source cannot be read at all, or at the first bad row
    with ``config.strict``. Otherwise returns, even when nothing loaded: callers decide
    what an empty result means (the CLI exits non-zero).
    """
    spec = resolve_source(source)
    report = LoadReport(source=str(source), source_kind=spec.kind)
    if spec.warning:
        report.warnings.append(spec.warning)
    normaliser = _Normaliser(config, report)

    arrow_table: pa.Table | None = None
    if spec.kind in ARROW_KINDS:
        arrow_table = read_arrow_table(spec, config.split)
        normaliser.resolve_columns(arrow_table.column_names, uniform=True)
        records = iter_arrow_records(arrow_table)
        total: int | None = arrow_table.num_rows
    else:
        records = _read_text_source(spec)
        # Decide the columns from the keys of the first records, not just the first one,
        # so that one odd first row does not change how the whole file is read.
        head = list(itertools.islice(records, COLUMN_SNIFF_RECORDS))
        keys = dict.fromkeys(key for r in head if isinstance(r.value, dict) for key in r.value)
        if keys:
            normaliser.resolve_columns(keys, uniform=False)
        records = itertools.chain(head, records)
        total = None

    reporter = Reporter("load", total, progress, cancel, unit="rows")
    chunks = _ChunkBuilder(spec.kind, arrow_table, pair_schema_for=lambda: pair_schema(report.format or "standard"))
    first_seen: dict[str, str] = {}

    for record in records:
        report.read += 1
        try:
            if record.error is not None:
                raise _RowRejected(record.error[0], None, record.error[1])
            prompt, chosen, rejected = normaliser.normalise(record.value)
            identifier = pair_id(prompt, chosen, rejected)
            if identifier in first_seen:
                raise _RowRejected("duplicate_pair", None, f"same pair as {first_seen[identifier]}")
        except _RowRejected as rejected_row:
            rejection = Rejection(
                rejected_row.reason, record.location, record.row_index, rejected_row.column, rejected_row.detail
            )
            report.rejected[rejection.reason] += 1
            report.rejections.append(rejection)
            if config.strict:
                raise LoadError(
                    f"{rejection.describe(report.source)}",
                    "fix the row, or drop --strict to skip bad rows and see them all in the report",
                ) from None
        else:
            first_seen[identifier] = record.location
            chunks.add(record, identifier, prompt, chosen, rejected)
        if report.read % 1024 == 0:
            reporter.advance(1024)
    reporter.done = report.read
    reporter.finish()

    report.loaded = len(first_seen)
    mapped = set(normaliser.columns.values()) if normaliser.columns else set()
    report.extra_columns = [key for key in normaliser.seen_keys if key not in mapped]
    pairs, records_table, numbers = chunks.tables(normaliser.seen_keys)
    _report_rendered_templates(report, pairs)
    assert report.read == report.loaded + report.rejected_total
    return LoadedDataset(pairs, records_table, report, numbers)


def _report_rendered_templates(report: LoadReport, pairs: pa.Table) -> None:
    """Count the prompts that carry a rendered chat template (conversations: the first message)."""
    prompts = pairs["prompt"]
    if report.format == "conversational":
        prompts = pc.struct_field(pc.list_element(prompts, 0), "content") if len(prompts) else pa.array([], pa.string())
    report.rendered_templates = count_rendered_templates(prompts)
    if not report.rendered_templates:
        return
    found = ", ".join(f"{family} ({TEMPLATE_FAMILIES[family][0]}) in {count:,}"
                      for family, count in report.rendered_templates.items())
    if report.rendered_template is not None:
        report.warnings.append(f"the prompts already carry a rendered chat template: {found}; such text is "
                               "scored as written, never templated a second time")
    else:
        report.warnings.append(f"{sum(report.rendered_templates.values()):,} of {report.loaded:,} prompts already "
                               f"carry a rendered chat template ({found}); the others do not")


class _ChunkBuilder:
    """Loaded rows, turned into Arrow every `CHUNK_ROWS` rows.

    Only one chunk's rows live as Python objects at a time; the rest is Arrow memory,
    so a million pairs cost about their text size, not several times it.
    """

    CHUNK_ROWS = 65_536
    NAMES = ("pair_id", "row_index", "prompt", "chosen", "rejected")

    def __init__(self, kind: str, arrow_table: pa.Table | None, pair_schema_for) -> None:
        self.arrow_table = arrow_table
        self.pair_schema_for = pair_schema_for
        self.columns: dict[str, list] = {name: [] for name in self.NAMES}
        self.raw: list = []
        self.pair_chunks: list[pa.Table] = []
        self.record_chunks: list = []
        self.numbers = _NumericFields() if kind in ("jsonl", "json") else None  # None: not JSON records

    def add(self, record: RawRecord, identifier: str, prompt: Any, chosen: Any, rejected: Any) -> None:
        for name, value in zip(self.NAMES, (identifier, record.row_index, prompt, chosen, rejected)):
            self.columns[name].append(value)
        if self.numbers is not None:
            self.raw.append(record.raw_json)
            self.numbers.add(record.value)
        elif self.arrow_table is None:
            self.raw.append(record.value)
        if len(self.columns["pair_id"]) >= self.CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.columns["pair_id"]:
            return
        self.pair_chunks.append(pa.table(self.columns, schema=self.pair_schema_for()))
        if self.arrow_table is not None:
            self.record_chunks.append(take_rows(self.arrow_table, self.columns["row_index"]))
        elif self.numbers is not None:
            self.record_chunks.append(pa.table({"_json": pa.array(self.raw, pa.string())}))
            self.numbers.flush()
        else:
            keys = dict.fromkeys(key for row in self.raw for key in row)
            self.record_chunks.append(pa.Table.from_pylist(self.raw, pa.schema([(k, pa.string()) for k in keys])))
        self.columns = {name: [] for name in self.NAMES}
        self.raw = []

    def tables(self, seen_keys: Iterable[str]) -> tuple[pa.Table, pa.Table, pa.Table | None]:
        """The pairs, the source's records and (JSON sources) their numeric fields, row for row."""
        self._flush()
        schema = self.pair_schema_for()
        pairs = pa.concat_tables(self.pair_chunks) if self.pair_chunks else schema.empty_table()
        if self.arrow_table is not None:
            empty = self.arrow_table.schema.empty_table()
            records = pa.concat_tables(self.record_chunks) if self.record_chunks else empty
        elif self.numbers is not None:
            empty = pa.table({"_json": pa.array([], pa.string())})
            records = pa.concat_tables(self.record_chunks) if self.record_chunks else empty
        elif self.record_chunks:
            # every column seen, not only the first row's: a short row must not drop a column for all
            merged = pa.concat_tables(self.record_chunks, promote_options="default")
            records = pa.table({key: merged[key].cast(pa.string()) if key in merged.column_names
                                else pa.nulls(merged.num_rows, pa.string()) for key in seen_keys})
        else:
            records = pa.table({})
        numbers = self.numbers.table(pairs.num_rows) if self.numbers is not None else None
        return pairs, records, numbers


class _NumericFields:
    """The top-level fields of JSON records that hold numbers, gathered as the rows load.

    A field that ever holds anything else (text, a bool, a list, a number beyond float64)
    is dropped: it is not a margin column, and `core.margin_sources` says so by name.
    """

    def __init__(self) -> None:
        self.chunk: dict[str, list[float | None]] = {}
        self.chunk_rows = 0
        self.done: list[tuple[dict[str, pa.Array], int]] = []
        self.not_numeric: set[str] = set()

    def add(self, value: dict[str, Any]) -> None:
        for key, item in value.items():
            if item is None or key in self.not_numeric:
                continue
            try:
                if isinstance(item, bool) or not isinstance(item, (int, float)):
                    raise TypeError
                number = float(item)
            except (TypeError, OverflowError):
                self.not_numeric.add(key)
                self.chunk.pop(key, None)
                continue
            column = self.chunk.get(key)
            if column is None:
                column = self.chunk[key] = [None] * self.chunk_rows
            column.append(number)
        self.chunk_rows += 1
        for column in self.chunk.values():
            if len(column) < self.chunk_rows:
                column.append(None)

    def flush(self) -> None:
        if self.chunk_rows:
            self.done.append(({key: pa.array(column, pa.float64()) for key, column in self.chunk.items()},
                              self.chunk_rows))
        self.chunk, self.chunk_rows = {}, 0

    def table(self, rows: int) -> pa.Table:
        """One float64 column per numeric field; null where a chunk never had the field."""
        self.flush()
        names = [name for name in dict.fromkeys(n for chunk, _ in self.done for n in chunk)
                 if name not in self.not_numeric]
        columns = {name: pa.chunked_array([chunk.get(name, pa.nulls(count, pa.float64()))
                                           for chunk, count in self.done], pa.float64())
                   for name in names}
        table = pa.table(columns) if columns else pa.table({})
        assert not columns or table.num_rows == rows
        return table


def _read_text_source(spec: SourceSpec) -> Iterator[RawRecord]:
    if spec.kind == "jsonl":
        return guard_reading(spec, read_json_lines(spec))
    if spec.kind == "json":
        return guard_reading(spec, read_json_document(spec))
    return guard_reading(spec, read_delimited(spec))
