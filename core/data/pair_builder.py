"""Records in, the pair table out: row by row, or a block of Arrow rows at a time.

`PairBuilder` takes records from every reader of `core.data.loading`, in source order:
one `RawRecord` at a time (the per-row path), or a whole Arrow table (the fast import),
whose clean rows (core.data.arrow_rows) load without Python per row while every other row
goes through the same `RowNormaliser` as on the per-row path. `finish` then decides
what the whole file allows to decide (role-marked text as conversations, duplicates),
applies it and fills the report.

Duplicates keep the first occurrence. Rejections are kept in source order, so the report
and ``strict`` stop at the same row whichever path read it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.data.arrow_rows import CleanRows, clean_rows, numeric_columns, rows_marked, table_format
from core.data.chat_templates import TEMPLATE_FAMILIES, count_rendered_templates
from core.data.load_report import SCORE_COLUMN_PAIRS, LoadConfig, LoadReport, Rejection
from core.data.pairs import MESSAGE_TYPE, as_text, pair_ids, pair_schema
from core.data.roles import FAMILIES
from core.data.shapes import PROMPT_RULES, MissingColumnsError, Normalised, RowNormaliser, RowRejected, choose_columns
from core.data.sources import RawRecord
from core.errors import LoadError
from core.progress import Reporter

RULES = list(PROMPT_RULES)
FAMILY_NAMES = [family.name for family in FAMILIES]
CHUNK_ROWS = 65_536
"""Rows of the per-row path gathered before they become Arrow (one chunk of Python objects at a time)."""
EXAMPLES_PER_RULE = 2


@dataclass
class _Piece:
    """Loaded rows of one stretch of the source, in source order, before duplicates go."""

    row_index: np.ndarray
    where: np.ndarray
    """The number in each row's location ("line 12" -> 12); -1 where it is not known yet."""
    prompt: pa.Array
    chosen: pa.Array
    rejected: pa.Array
    rule: np.ndarray
    family: np.ndarray
    """Index into FAMILY_NAMES where the pair reads as a role-marked conversation, else -1."""
    messages: list | None
    """Per row, that conversation (or None); None for the whole piece when no row has one."""
    records: Any
    """JSON sources: each row's text; CSV: its cells as a string table; Arrow: None."""
    ids: pa.Array = None
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per row, what duplicates are found by; `_add_piece` sets it with `ids` (empty before)."""

    def __len__(self) -> int:
        return len(self.row_index)


def _clean_piece(clean: CleanRows, row_index: np.ndarray, where: np.ndarray, records: Any) -> _Piece:
    """The rows Arrow's checks vouched for: the prompt column as given, never role-marked."""
    count = len(row_index)
    return _Piece(
        row_index,
        where,
        clean.prompt,
        clean.chosen,
        clean.rejected,
        np.zeros(count, dtype=np.int8),
        np.full(count, -1, dtype=np.int8),
        None,
        records,
    )


class PairBuilder:
    """Collects loaded rows and rejections; `finish` returns pairs, records and numbers."""

    def __init__(
        self,
        kind: str,
        config: LoadConfig,
        report: LoadReport,
        reporter: Reporter,
        locations: Callable[[], np.ndarray] | None = None,
        records_sink: Callable[[pa.Array], None] | None = None,
    ) -> None:
        """`locations()` gives every row's location number, for rows read without one (CSV by Arrow);
        `records_sink`: see `core.data.loading.load_dataset`."""
        self.records_sink = records_sink
        self.kind = kind
        self.config = config
        self.report = report
        self.reporter = reporter
        self.normaliser = RowNormaliser(config.max_field_chars)
        self.location_kind = {"jsonl": "line", "csv": "line", "tsv": "line", "json": "item"}.get(kind, "row")
        self.pieces: list[_Piece] = []
        self.pending: list[tuple[RawRecord, Normalised]] = []
        """Rows of the per-row path not yet turned into a piece."""
        self._unreported = 0
        self.numbers = _NumericFields() if kind in ("jsonl", "json") else None
        self.guessed: tuple[str, ...] = ()
        self._role_seen = config.role_text_decision not in (None, "text")
        """A rejection may still come from `_convert_role_text`, so strict cannot stop early."""
        self._in_block = False
        self._dropped_after: set[int] = set()
        self._locations = locations
        self._lines: np.ndarray | None = None

    # Columns -----------------------------------------------------------------------
    def choose_columns(self, keys: list[str], head: list[dict], uniform: bool) -> None:
        """Pick the columns of each role.

        `uniform` sources (Arrow tables, CSV) have one schema, so a missing column is a
        mapping error for the whole file. JSON records may differ from row to row: there
        a missing column is reported per row, and the file fails only if no row loads.
        """
        config = self.config
        choice, missing = choose_columns(
            list(keys),
            head,
            prompt_col=config.prompt_col,
            chosen_col=config.chosen_col,
            rejected_col=config.rejected_col,
            system_col=config.system_col,
        )
        if config.system_col and "prompt" not in choice.roles:
            raise LoadError(
                f"{self.report.source}: --system-col {config.system_col}, but the data has no prompt "
                "column (chosen and rejected hold whole texts or conversations), so a system message "
                "has no prompt to precede",
                "leave --system-col out, or name the prompt column with --prompt-col",
            )
        if uniform and missing:
            required = [
                role if role == column else f"{role} ({column})"
                for role, column in (
                    ("prompt", config.prompt_col or "prompt"),
                    ("chosen", choice.roles["chosen"]),
                    ("rejected", choice.roles["rejected"]),
                )
            ]
            raise MissingColumnsError(self.report.source, missing, required, list(keys))
        self.normaliser.columns = dict(choice.roles)
        self.guessed = choice.guessed
        self.report.columns = dict(choice.roles)
        self.report.prompt_style = "explicit" if "prompt" in choice.roles else "implicit"
        self.normaliser.seen_keys.update(dict.fromkeys(keys))

    @property
    def columns(self) -> dict[str, str] | None:
        return self.normaliser.columns

    # The per-row path ----------------------------------------------------------------
    def add_record(self, record: RawRecord) -> None:
        self.report.read += 1
        pair = self._normalise(record)
        if pair is not None:
            self.pending.append((record, pair))
            if len(self.pending) >= CHUNK_ROWS:
                self._flush()
        self._unreported += 1
        if self._unreported == 1024:
            self.reporter.advance(self._unreported)
            self._unreported = 0

    def _normalise(self, record: RawRecord) -> Normalised | None:
        try:
            if record.error is not None:
                raise RowRejected(record.error[0], None, record.error[1])
            if self.columns is None and isinstance(record.value, dict):
                self.choose_columns(list(record.value), [record.value], uniform=False)
            pair = self.normaliser.normalise(record.value, record.location)
        except RowRejected as rejected:
            self._reject(
                Rejection(rejected.reason, record.location, record.row_index, rejected.column, rejected.detail)
            )
            return None
        self._role_seen |= pair.role_family is not None
        return pair

    def _reject(self, rejection: Rejection) -> None:
        self.report.rejected[rejection.reason] += 1
        self.report.rejections.append(rejection)
        if self.config.strict and not self._role_seen and not self._in_block:
            self._stop_at_first()

    def _flush(self) -> None:
        rows, self.pending = self.pending, []
        if rows:
            self._add_piece(self._piece_of_rows(rows))

    def _piece_of_rows(self, rows: list[tuple[RawRecord, Normalised]], with_records: bool = True) -> _Piece:
        field_type = self._field_type()
        has_roles = any(pair.role_family is not None for _, pair in rows)
        return _Piece(
            row_index=np.array([record.row_index for record, _ in rows], dtype=np.int64),
            where=np.array([_number(record.location) for record, _ in rows], dtype=np.int64),
            prompt=pa.array([pair.prompt for _, pair in rows], field_type),
            chosen=pa.array([pair.chosen for _, pair in rows], field_type),
            rejected=pa.array([pair.rejected for _, pair in rows], field_type),
            rule=np.array([RULES.index(pair.rule) for _, pair in rows], dtype=np.int8),
            family=np.array(
                [FAMILY_NAMES.index(pair.role_family) if pair.role_family else -1 for _, pair in rows], dtype=np.int8
            ),
            messages=[pair.messages for _, pair in rows] if has_roles else None,
            records=self._records_of([record for record, _ in rows]) if with_records else None,
        )

    def _records_of(self, records: list[RawRecord]) -> Any:
        if self.numbers is not None:
            for record in records:
                self.numbers.add(record.value)
            return pa.array([record.raw_json for record in records], pa.string())
        if self.kind in ("csv", "tsv"):
            keys = dict.fromkeys(key for record in records for key in record.value)
            return pa.Table.from_pylist(
                [record.value for record in records], pa.schema([(key, pa.string()) for key in keys])
            )
        return None

    def _field_type(self) -> pa.DataType:
        return MESSAGE_TYPE if self.normaliser.format == "conversational" else pa.string()

    # The fast path ---------------------------------------------------------------------
    def add_table(
        self,
        table: pa.Table,
        first_row: int,
        where: np.ndarray | None,
        records: Any,
        values: Callable[[np.ndarray], Iterable[RawRecord]],
        plain: bool = False,
    ) -> None:
        """A block of rows read by Arrow: row k has row_index ``first_row + k``.

        `where` holds each row's location number (None: not known until needed); `records`
        what the loaded rows keep (JSON texts, CSV cells, or None for Arrow sources);
        `values(rows)` gives the per-row path's records for the rows the checks leave to it;
        `plain` says that no text holds a character JSON escapes (core.data.pairs.pair_ids).
        """
        self._flush()
        count = table.num_rows
        self.report.read += count
        fmt = table_format(table, self.columns) if self.columns else None
        if fmt is not None and self.normaliser.format not in (None, fmt):
            fmt = None  # a block of the other kind: every row is reported per row
        if fmt is None:
            clean = None
            mask = np.zeros(count, dtype=bool)
        else:
            clean = clean_rows(table, self.normaliser.chosen_columns, fmt, self.config.max_field_chars)
            mask = clean.mask
            if mask.any() and self.normaliser.format is None:
                self.normaliser.format = fmt
        self.normaliser.seen_keys.update(dict.fromkeys(table.column_names))
        slow: list[tuple[RawRecord, Normalised]] = []
        rejected_before = len(self.report.rejections)
        self._in_block = True
        try:
            for record in values(np.flatnonzero(~mask)):
                pair = self._normalise(record)
                if pair is not None:
                    slow.append((record, pair))
        finally:
            self._in_block = False
        loaded = mask.copy()
        loaded[[record.row_index - first_row for record, _ in slow]] = True
        if self.numbers is not None:
            self.numbers.add_columns(*numeric_columns(table, loaded), int(loaded.sum()))
        self._add_piece(self._piece_of_block(first_row, where, records, clean, slow, loaded), plain)
        self.reporter.advance(count)
        if self.config.strict and not self._role_seen and len(self.report.rejections) > rejected_before:
            self._stop_at_first()

    def _piece_of_block(
        self, first_row: int, where: np.ndarray | None, records: Any, clean, slow, loaded: np.ndarray
    ) -> _Piece:
        positions = np.flatnonzero(loaded)
        kept_records = rows_marked(records, loaded) if records is not None else None
        located = where[positions] if where is not None else np.full(len(positions), -1, dtype=np.int64)
        if clean is not None and not slow:  # every loaded row is clean: nothing to interleave
            return _clean_piece(clean, positions + first_row, located, kept_records)
        slow_piece = self._piece_of_rows(slow, with_records=False) if slow else None
        if clean is None or not clean.mask.any():
            parts = [slow_piece] if slow_piece else []
            clean_count = 0
        else:
            clean_count = int(clean.mask.sum())
            clean_positions = np.flatnonzero(clean.mask)
            parts = [_clean_piece(clean, clean_positions + first_row, np.full(clean_count, -1, dtype=np.int64), None)]
            if slow_piece:
                parts.append(slow_piece)
        if not parts:
            return self._empty_piece()
        row_index = np.concatenate([part.row_index for part in parts])
        order = np.argsort(row_index, kind="stable")
        take = pa.array(order)
        messages = None
        if slow_piece is not None and slow_piece.messages is not None:
            messages = [None] * clean_count + slow_piece.messages
            messages = [messages[i] for i in order.tolist()]
        field_type = self._field_type()

        def merged(name: str) -> pa.Array:
            return pa.concat_arrays(
                [chunk.cast(field_type) for part in parts for chunk in _chunks(getattr(part, name))]
            ).take(take)

        return _Piece(
            row_index=row_index[order],
            where=located,
            prompt=merged("prompt"),
            chosen=merged("chosen"),
            rejected=merged("rejected"),
            rule=np.concatenate([part.rule for part in parts])[order],
            family=np.concatenate([part.family for part in parts])[order],
            messages=messages,
            records=kept_records,
        )

    def _empty_piece(self) -> _Piece:
        field_type = self._field_type()
        nothing = np.zeros(0, dtype=np.int64)
        return _Piece(
            nothing,
            nothing,
            pa.array([], field_type),
            pa.array([], field_type),
            pa.array([], field_type),
            np.zeros(0, dtype=np.int8),
            np.zeros(0, dtype=np.int8),
            None,
            None,
        )

    def _add_piece(self, piece: _Piece, plain: bool = False) -> None:
        if len(piece):
            piece.ids, piece.keys = _ids(piece.prompt, piece.chosen, piece.rejected, plain)
            self.pieces.append(piece)
            if self.records_sink is not None and self.numbers is not None:  # JSON: the records are texts
                self.records_sink(piece.records)

    # Strict ----------------------------------------------------------------------------
    def _stop_at_first(self) -> None:
        """With ``strict``: raise at the first bad row, a duplicate included."""
        self._flush()
        first = min(self.report.rejections + self._duplicates(), key=lambda r: r.row_index, default=None)
        if first is not None:
            _raise_strict(first, self.report.source)

    # The end ---------------------------------------------------------------------------
    def finish(
        self, records_of_arrow: Callable[[np.ndarray], pa.Table] | None = None
    ) -> tuple[pa.Table, pa.Table, pa.Table | None]:
        """The pairs, the source's records and (JSON sources) their numeric fields, row for row.

        `records_of_arrow(row_indices)` takes the records of an Arrow source.
        """
        self._flush()
        self._convert_role_text()
        duplicates = self._duplicates()
        for rejection in duplicates:
            self.report.rejected[rejection.reason] += 1
            self.report.rejections.append(rejection)
        self.report.rejections.sort(key=lambda rejection: rejection.row_index)
        # counts in the order the reasons first occur in the file, as the per-row path met them
        self.report.rejected = Counter(rejection.reason for rejection in self.report.rejections)
        if self.config.strict and self.report.rejections:
            _raise_strict(self.report.rejections[0], self.report.source)
        dropped = {rejection.row_index for rejection in duplicates} | self._dropped_after
        pieces = [self._without(piece, dropped) for piece in self.pieces] if dropped else self.pieces
        pieces = [piece for piece in pieces if len(piece)]
        report = self.report
        report.loaded = sum(len(piece) for piece in pieces)
        mapped = set(self.columns.values()) if self.columns else set()
        report.file_columns = list(self.normaliser.seen_keys)
        report.extra_columns = [key for key in self.normaliser.seen_keys if key not in mapped]
        report.guessed_columns = list(self.guessed)
        report.format = self.normaliser.format
        assert report.read == report.loaded + report.rejected_total
        schema = pair_schema(report.format or "standard")
        if pieces:
            pairs = pa.Table.from_arrays(
                [
                    pa.chunked_array([p.ids for p in pieces], pa.string()),
                    pa.chunked_array([pa.array(p.row_index) for p in pieces], pa.int64()),
                    *(
                        pa.chunked_array(
                            [
                                chunk.cast(schema.field(name).type)
                                for p in pieces
                                for chunk in _chunks(getattr(p, name))
                            ],
                            schema.field(name).type,
                        )
                        for name in ("prompt", "chosen", "rejected")
                    ),
                ],
                schema=schema,
            )
        else:
            pairs = schema.empty_table()
        records = self._records_table(pieces, records_of_arrow, pairs)
        numbers = self.numbers.table(dropped, self._loaded_row_indices()) if self.numbers is not None else None
        self._describe(pieces, pairs, records, numbers)
        return pairs, records, numbers

    def _records_table(self, pieces: list[_Piece], records_of_arrow, pairs: pa.Table) -> pa.Table:
        if self.numbers is not None:
            texts = [chunk for piece in pieces for chunk in _chunks(piece.records)]
            return pa.table({"_json": pa.chunked_array(texts, pa.string()) if texts else pa.array([], pa.string())})
        if self.kind in ("csv", "tsv"):
            chunks = [piece.records for piece in pieces]
            if not chunks:
                return pa.table({})
            # every column seen, not only the first row's: a short row must not drop a column for all
            merged = pa.concat_tables(chunks, promote_options="default")
            return pa.table(
                {
                    key: merged[key].cast(pa.string())
                    if key in merged.column_names
                    else pa.nulls(merged.num_rows, pa.string())
                    for key in self.normaliser.seen_keys
                }
            )
        assert records_of_arrow is not None
        return records_of_arrow(pairs["row_index"].to_numpy())

    def _loaded_row_indices(self) -> np.ndarray:
        return np.concatenate([piece.row_index for piece in self.pieces]) if self.pieces else np.zeros(0, np.int64)

    # Role-marked text ------------------------------------------------------------------
    def _convert_role_text(self) -> None:
        """Role-marked text becomes conversations when every loaded pair reads as one of
        the same family (and the user did not ask to keep text); else it stays text.

        A workspace's recorded decision (`LoadConfig.role_text_decision`) overrides what the
        file would decide now: "text" keeps text, a family converts its dialogues and rejects
        every other pair, so the ids of unchanged pairs never depend on the other rows."""
        families = np.concatenate([piece.family for piece in self.pieces]) if self.pieces else np.zeros(0, np.int8)
        marked = families >= 0
        decision = self.config.role_text_decision
        if not marked.any() and decision in (None, "text"):
            return
        found = sorted({FAMILY_NAMES[i] for i in np.unique(families[marked]).tolist()})
        report = self.report
        report.role_markers = ", ".join(found) or None
        report.role_text = "text"
        if self.config.keep_role_text:
            report.role_text_reason = (
                "kept as text, as the load options ask (--keep-role-text, or a workspace "
                "made before role-marked text became conversations)"
            )
            return
        if decision == "text":
            report.role_text_reason = (
                "kept as text, as this workspace read the file when it was made (so its pair_ids stay valid)"
            )
            return
        if decision is None:
            if len(found) > 1:
                report.role_text_reason = f"kept as text: the pairs mix role markers ({', '.join(found)})"
                return
            if not marked.all():
                first = self._location_of_position(int(np.flatnonzero(~marked)[0]))
                report.role_text_reason = (
                    f"kept as text: {int((~marked).sum()):,} of {len(marked):,} pairs do not "
                    f"read as role-marked dialogues (the first at {first})"
                )
                return
            family = found[0]
            report.role_text_reason = (
                "every pair reads as a role-marked dialogue, so each model's chat template "
                "applies when scoring; --keep-role-text keeps the text"
            )
        else:
            family = decision
            report.role_markers = family
            report.role_text_reason = (
                f"this workspace reads {family} dialogues as conversations (so its pair_ids "
                "stay valid); pairs that are not one are rejected (not_role_marked)"
            )
        report.role_text = "conversations"
        self.normaliser.format = "conversational"
        code = FAMILY_NAMES.index(family)
        for piece in self.pieces:
            messages = piece.messages or [None] * len(piece)
            for position in np.flatnonzero(piece.family != code).tolist():
                detail = (
                    f"reads as {FAMILY_NAMES[piece.family[position]]} dialogues, not {family}"
                    if piece.family[position] >= 0
                    else f"does not read as a role-marked dialogue ({family})"
                )
                self._reject_after(piece, position, "not_role_marked", detail)
            prompts, chosen, rejected = zip(*(pair or ([], [], []) for pair in messages))
            piece.prompt = pa.array(list(prompts), MESSAGE_TYPE)
            piece.chosen = pa.array(list(chosen), MESSAGE_TYPE)
            piece.rejected = pa.array(list(rejected), MESSAGE_TYPE)
            piece.ids, piece.keys = _ids(piece.prompt, piece.chosen, piece.rejected)
            for position, pair in enumerate(messages):
                if pair is not None and piece.family[position] == code and pair[1] == pair[2]:
                    # replies that differed only in the whitespace around them
                    self._reject_after(
                        piece, position, "identical_responses", "chosen equals rejected once read as a conversation"
                    )

    def _reject_after(self, piece: _Piece, position: int, reason: str, detail: str) -> None:
        """Reject a row that loaded but whose pair the whole-file decisions refuse."""
        row = int(piece.row_index[position])
        self._dropped_after.add(row)
        self.report.rejected[reason] += 1
        self.report.rejections.append(
            Rejection(reason, self._location(piece, position), row, self.normaliser.chosen_columns["chosen"], detail)
        )

    # Duplicates ------------------------------------------------------------------------
    def _duplicates(self) -> list[Rejection]:
        """A rejection for every loaded row whose pair appeared in an earlier loaded row."""
        pieces = [piece for piece in self.pieces if len(piece)]
        if not pieces:
            return []
        keys = np.concatenate([piece.keys for piece in pieces])
        dropped = self._dropped_after
        rows = np.concatenate([piece.row_index for piece in pieces])
        live = ~np.isin(rows, np.fromiter(dropped, dtype=np.int64, count=len(dropped))) if dropped else None
        candidates = np.flatnonzero(live) if live is not None else np.arange(len(keys))
        ordered = np.sort(keys[candidates])
        if not (ordered[1:] == ordered[:-1]).any():
            return []  # no repeat: found by a plain sort, half the cost of the stable one `first` needs
        _, first = np.unique(keys[candidates], return_index=True)
        first_of_key = dict(zip(keys[candidates[first]].tolist(), candidates[first].tolist()))
        repeated = np.setdiff1d(candidates, candidates[first])
        duplicates = []
        for position in repeated.tolist():
            original = first_of_key[int(keys[position])]
            duplicates.append(
                Rejection(
                    "duplicate_pair",
                    self._location_of_position(position),
                    int(rows[position]),
                    None,
                    f"same pair as {self._location_of_position(original)}",
                )
            )
        return duplicates

    def _location_of_position(self, position: int) -> str:
        for piece in self.pieces:
            if position < len(piece):
                return self._location(piece, position)
            position -= len(piece)
        raise IndexError(position)

    def _location(self, piece: _Piece, position: int) -> str:
        number = int(piece.where[position])
        if number < 0:
            lines = self._resolved_locations()
            number = int(lines[int(piece.row_index[position])])
        return f"{self.location_kind} {number}"

    def _resolved_locations(self) -> np.ndarray:
        if self._lines is None:
            assert self._locations is not None
            self._lines = self._locations()
        return self._lines

    def _without(self, piece: _Piece, dropped: set[int]) -> _Piece:
        keep = ~np.isin(piece.row_index, np.fromiter(dropped, dtype=np.int64, count=len(dropped)))
        if keep.all():
            return piece
        mask = pa.array(keep)
        return _Piece(
            piece.row_index[keep],
            piece.where[keep],
            piece.prompt.filter(mask),
            piece.chosen.filter(mask),
            piece.rejected.filter(mask),
            piece.rule[keep],
            piece.family[keep],
            [m for m, k in zip(piece.messages, keep) if k] if piece.messages is not None else None,
            piece.records.filter(mask) if piece.records is not None else None,
            piece.ids.filter(mask),
            piece.keys[keep],
        )

    # The report ------------------------------------------------------------------------
    def _describe(self, pieces: list[_Piece], pairs: pa.Table, records: pa.Table, numbers: pa.Table | None) -> None:
        report = self.report
        rules = np.concatenate([piece.rule for piece in pieces]) if pieces else np.zeros(0, np.int8)
        counts = np.bincount(rules, minlength=len(RULES))
        report.prompt_rules = {RULES[i]: int(n) for i, n in enumerate(counts) if n}
        report.prompt_examples = {}
        for code in np.flatnonzero(counts).tolist():
            positions = np.flatnonzero(rules == code)[:EXAMPLES_PER_RULE].tolist()
            report.prompt_examples[RULES[code]] = [self._example(pieces, pairs, p) for p in positions]
        report.shape = self._shape() if report.loaded else None  # nothing loaded: no shape was read
        _report_rendered_templates(report, pairs)
        self._report_scores(records if numbers is None else numbers)
        notes = self.normaliser.notes
        if notes.prompt_mismatch:
            report.warnings.append(
                f"{notes.prompt_mismatch:,} rows have a prompt column that is not the user turn their replies "
                f"repeat (the first at {notes.first_mismatch}); the prompt is taken from the replies' messages"
            )

    def _example(self, pieces: list[_Piece], pairs: pa.Table, position: int) -> dict[str, str]:
        row = pairs.slice(position, 1).to_pylist()[0]
        where = position
        for piece in pieces:
            if where < len(piece):
                location = self._location(piece, where)
                break
            where -= len(piece)
        prompt = as_text(row["prompt"])
        return {
            "location": location,
            "prompt_end": prompt[-60:],
            "chosen_start": as_text(row["chosen"])[:60],
            "rejected_start": as_text(row["rejected"])[:60],
        }

    def _shape(self) -> str:
        report = self.report
        rules = report.prompt_rules
        top = max(rules, key=rules.__getitem__) if rules else None
        if "system" in report.columns:
            return "system_column"
        if "input" in report.columns:
            return "instruction_and_input"
        if top == "last_assistant_turn":
            return "role_marked"
        if top == "role_marked_prompt":
            return "role_marked_prompt"
        if report.prompt_style == "implicit":
            return "implicit_conversation" if top == "shared_messages" else "implicit_text"
        if top in ("shared_messages", "prompt_as_user_turn"):
            return "prompt_and_message_replies"
        return report.format or "standard"

    def _report_scores(self, table: pa.Table) -> None:
        """Per-response score columns, and how many pairs they tie (no preference at all)."""
        report = self.report
        for chosen_col, rejected_col in SCORE_COLUMN_PAIRS:
            if chosen_col in table.column_names and rejected_col in table.column_names:
                try:
                    chosen = table[chosen_col].cast(pa.float64())
                    rejected = table[rejected_col].cast(pa.float64())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
                report.score_columns.append([chosen_col, rejected_col])
                if len(report.score_columns) == 1:
                    report.tied_scores = int(pc.sum(pc.equal(chosen, rejected)).as_py() or 0)
        if report.tied_scores:
            chosen_col, rejected_col = report.score_columns[0]
            report.warnings.append(
                f"{report.tied_scores:,} pairs tie on {chosen_col} = {rejected_col}: loaded, "
                "but they carry no preference"
            )


def _chunks(column: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def _ids(prompt, chosen, rejected, plain: bool = False) -> tuple[pa.Array, np.ndarray]:
    """pair_ids in slices, so that no canonical text grows past Arrow's 2 GiB string limit."""
    if len(prompt) <= CHUNK_ROWS:
        return pair_ids(prompt, chosen, rejected, plain)
    ids, keys = [], []
    for start in range(0, len(prompt), CHUNK_ROWS):
        part = pair_ids(
            prompt.slice(start, CHUNK_ROWS), chosen.slice(start, CHUNK_ROWS), rejected.slice(start, CHUNK_ROWS), plain
        )
        ids.append(part[0])
        keys.append(part[1])
    return pa.concat_arrays(ids), np.concatenate(keys)


def _raise_strict(first: Rejection, source: str) -> None:
    raise LoadError(
        first.describe(source), "fix the row, or drop --strict to skip bad rows and see them all in the report"
    )


def _number(location: str) -> int:
    return int(location.rsplit(" ", 1)[1])


def _report_rendered_templates(report: LoadReport, pairs: pa.Table) -> None:
    """Count the prompts that carry a rendered chat template (conversations: the first message)."""
    prompts = pairs["prompt"]
    if report.format == "conversational":
        prompts = pc.struct_field(pc.list_element(prompts, 0), "content") if len(prompts) else pa.array([], pa.string())
    report.rendered_templates = count_rendered_templates(prompts)
    if not report.rendered_templates:
        return
    found = ", ".join(
        f"{family} ({TEMPLATE_FAMILIES[family][0]}) in {count:,}" for family, count in report.rendered_templates.items()
    )
    if report.rendered_template is not None:
        report.warnings.append(
            f"the prompts already carry a rendered chat template: {found}; such text is "
            "scored as written, never templated a second time"
        )
    else:
        report.warnings.append(
            f"{sum(report.rendered_templates.values()):,} of {report.loaded:,} prompts already "
            f"carry a rendered chat template ({found}); the others do not"
        )


class _NumericFields:
    """The top-level fields of JSON records that hold numbers, gathered as the rows load.

    A field that ever holds anything else (text, a bool, a list, a number beyond float64)
    is dropped: it is not a margin column, and `core.store.margin_sources` says so by name.
    Rows come one by one (`add`) or a block at a time (`add_columns`), in source order.
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
        if self.chunk_rows >= CHUNK_ROWS:
            self.flush()

    def add_columns(self, columns: dict[str, pa.Array], other: set[str], rows: int) -> None:
        self.flush()
        self.not_numeric |= other
        if rows:
            self.done.append((columns, rows))

    def flush(self) -> None:
        if self.chunk_rows:
            self.done.append(
                ({key: pa.array(column, pa.float64()) for key, column in self.chunk.items()}, self.chunk_rows)
            )
        self.chunk, self.chunk_rows = {}, 0

    def table(self, dropped: set[int], row_index: np.ndarray) -> pa.Table:
        """One float64 column per numeric field, at the rows that stayed loaded; null
        where a stretch of rows never had the field."""
        self.flush()
        names = [
            name for name in dict.fromkeys(n for chunk, _ in self.done for n in chunk) if name not in self.not_numeric
        ]
        columns = {
            name: pa.chunked_array(
                [
                    piece
                    for chunk, count in self.done
                    for piece in _chunks(chunk.get(name, pa.nulls(count, pa.float64())))
                ],
                pa.float64(),
            )
            for name in names
        }
        table = pa.table(columns) if columns else pa.table({})
        if dropped and columns:
            keep = ~np.isin(row_index, np.fromiter(dropped, dtype=np.int64, count=len(dropped)))
            table = table.filter(pa.array(keep))
        return table
