"""Bad input, fuzzed: no traceback escapes, every rejection says where and why.

Loaders: whatever bytes, JSON values or Arrow columns a file holds, `load_dataset`
either raises `LoadError` naming the file, or returns a report whose counts add up
(read = loaded + rejected), whose every rejection has a known reason, a location
(line / item / row N) and a row index, and whose loaded pairs all have text.
(tests/test_loading.py holds the first property, random JSON lines of flat records;
these go further: raw bytes in every format, wild JSON values, Arrow column types.)

Command line: random subcommands with random flags, values and paths end with an int
exit code, and a failure prints a short error, never a traceback.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.data.loading import REASONS, LoadConfig, LoadedDataset, load_dataset
from core.data.pairs import TEXT_FIELDS
from core.errors import LoadError

LOCATION = re.compile(r"^(line|item|row) \d+$")
# A longer hunt: DMTUI_FUZZ_EXAMPLES=3000 pytest tests/test_fuzz.py
FUZZ = settings(max_examples=int(os.environ.get("DMTUI_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def has_text(value) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return any(message["content"].strip() for message in value)


def load_or_refuse(path: Path, **config) -> LoadedDataset | None:
    """Load `path`; None when refused with a LoadError that names it. Checks every invariant."""
    try:
        loaded = load_dataset(str(path), LoadConfig(**config))
    except LoadError as error:
        assert str(path) in error.message, error.message
        return None
    report = loaded.report
    assert report.read == report.loaded + report.rejected_total
    assert len(report.rejections) == report.rejected_total
    assert loaded.pairs.num_rows == report.loaded
    assert loaded.records.num_rows == report.loaded or report.loaded == 0
    for rejection in report.rejections:
        assert rejection.reason in REASONS, rejection
        assert LOCATION.match(rejection.location), rejection
        assert isinstance(rejection.row_index, int) and rejection.row_index >= 0
        assert rejection.detail
    for pair in loaded.pairs.to_pylist():
        assert all(has_text(pair[name]) for name in TEXT_FIELDS), pair
    # The report is what `info --json` prints and the workspace caches: plain, encodable JSON.
    json.dumps(report.to_json(include_all=True), ensure_ascii=False).encode("utf-8")
    return loaded


# ---------------------------------------------------------------------------------
# Random bytes in every format the loader reads
# ---------------------------------------------------------------------------------

GOOD_LINE = b'{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n'
FILE_NAMES = ("d.jsonl", "d.json", "d.csv", "d.tsv", "d.parquet", "d.jsonl.gz", "d.csv.gz", "d.json.gz", "d", "d.txt")
# Beginnings that steer the sniffer into each reader before the garbage starts.
PREFIXES = (b"", b"PAR1", b"\x1f\x8b", b"{", b"[", b"\xef\xbb\xbf", GOOD_LINE, b"prompt,chosen,rejected\n",
            b"prompt\tchosen\trejected\n", b'{"data": [')
garbage = st.binary(max_size=300) | st.lists(
    st.sampled_from([b"{", b"}", b"[", b"]", b'"', b",", b":", b"\n", b"\r\n", b"\t", b"\\", b"\\u", b"\xff",
                     b"\x00", b"null", b"1e999", b"NaN", b'"chosen"', b'"prompt"', b"a", b"\xc3"]),
    max_size=60).map(b"".join)


@FUZZ
@given(name=st.sampled_from(FILE_NAMES), prefix=st.sampled_from(PREFIXES), body=garbage,
       compress=st.sampled_from([None, "whole", "truncated"]), strict=st.booleans())
def test_random_bytes_in_any_format_load_or_are_refused_by_name(tmp_path, name, prefix, body, compress, strict):
    data = prefix + body
    if compress is not None:
        data = gzip.compress(data)
        if compress == "truncated":
            data = data[: max(2, len(data) // 2)]
    path = tmp_path / name
    path.write_bytes(data)
    load_or_refuse(path, strict=strict)


def test_a_gzip_stream_cut_after_the_sniffed_head_is_refused_by_name(tmp_path):
    """Past the first 64 KiB the sniffer saw, a truncated or corrupt stream fails mid-read."""
    data = gzip.compress(b"".join(GOOD_LINE.replace(b"4", str(i).encode()) for i in range(4000)))
    for name, damaged in (("cut.jsonl.gz", data[:-20]), ("crc.jsonl.gz", data[:-8] + b"\0\0\0\0" + data[-4:])):
        path = tmp_path / name
        path.write_bytes(damaged)
        with pytest.raises(LoadError, match=re.escape(str(path)) + ".*cannot be read after line"):
            load_dataset(str(path))


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0.05, 0.95), st.integers(1, 255)), min_size=1, max_size=4),
       sniffed=st.booleans())
def test_bytes_flipped_inside_a_gzip_stream_are_refused_by_name(tmp_path, flips, sniffed):
    """Corrupt deflate data raises zlib.error, which is not an OSError: it must not escape."""
    lines = 40 if sniffed else 4000  # all within the sniffed head, or mostly past it
    data = bytearray(gzip.compress(b"".join(GOOD_LINE.replace(b"4", str(i).encode()) for i in range(lines))))
    for where, mask in flips:
        data[10 + int(where * (len(data) - 18))] ^= mask  # inside the stream: header and trailer spared
    path = tmp_path / "flipped.jsonl.gz"
    path.write_bytes(bytes(data))
    load_or_refuse(path, strict=False)


# ---------------------------------------------------------------------------------
# Random JSON values: nested, wrong types, huge numbers, NaN, unicode, surrogates
# ---------------------------------------------------------------------------------

texts = st.text(max_size=8) | st.sampled_from(["", " ", "\u200b", "日本語", "😀", "\x00", "a\u0301", "[/]",
                                                "[bold red]x[/]", "'); DROP TABLE t; --"])
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | texts
           | st.integers(min_value=10**30, max_value=10**40))
json_values = st.recursive(
    scalars | st.just("\ud800 lone"),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=10,
)
messages = st.lists(st.fixed_dictionaries({"role": texts, "content": texts},
                                          optional={"name": json_values}), min_size=0, max_size=3)
fields = texts | messages | json_values
records = st.fixed_dictionaries(
    {}, optional={"prompt": fields, "chosen": fields, "rejected": fields, "extra": json_values})


def _raw_json_text(value, ascii_only: bool = False) -> str:
    """JSON as Python writes it, NaN and Infinity included (json.loads reads them back).

    Written as is, a lone surrogate becomes bytes that are not UTF-8; ASCII-escaped, a
    \\udXXX escape that decodes to a string that is not valid Unicode.
    """
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


# Text that json.loads reads but Python cannot hold, or that decodes to invalid Unicode.
hostile_lines = st.sampled_from([
    '{"prompt": "p", "chosen": "a", "rejected": ' + "1" * 5000 + "}",
    "[" * 5000 + "]" * 5000,
    '{"prompt": "p", "chosen": "a\\ud800", "rejected": "b"}',
    '{"prompt": "p", "chosen": "a", "rejected": "b", "\\udfff": 1}',
    '{"prompt": "p", "chosen": "\\ud83d\\ude00", "rejected": "b"}',  # a valid pair: loads
    '{"prompt": "p", "chosen": NaN, "rejected": Infinity}',
    '{"prompt": "p", "chosen": "a", "rejected": "b", "prompt": "q"}',
    '{"prompt": "p", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}',
    '{"prompt": [], "chosen": [{"role": "a", "content": " "}], "rejected": [{"role": "a", "content": "x"}]}',
    '{"chosen": [{"role": "user", "content": " "}, {"role": "assistant", "content": "a"}], '
    '"rejected": [{"role": "user", "content": " "}, {"role": "assistant", "content": "b"}]}',
])
json_lines = st.one_of(st.builds(_raw_json_text, records | json_values, st.booleans()), hostile_lines)


@FUZZ
@given(lines=st.lists(json_lines, min_size=1, max_size=8), strict=st.booleans())
def test_random_json_values_per_line(tmp_path, lines, strict):
    path = tmp_path / "values.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n")
    load_or_refuse(path, strict=strict)


@FUZZ
@given(items=st.lists(st.one_of(records, json_values), max_size=6), wrapped=st.booleans(),
       hostile=st.lists(hostile_lines, max_size=2))
def test_random_json_documents(tmp_path, items, wrapped, hostile):
    body = "[" + ", ".join([_raw_json_text(item) for item in items] + hostile) + "]"
    path = tmp_path / "values.json"
    path.write_bytes((('{"rows": ' + body + "}") if wrapped else body).encode("utf-8", "surrogatepass"))
    load_or_refuse(path)


# ---------------------------------------------------------------------------------
# Random column sets and types through Arrow (Parquet) and CSV
# ---------------------------------------------------------------------------------

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
ARROW_TYPES = {
    "string": (pa.string(), texts),
    "large_string": (pa.large_string(), texts),
    "int": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "float": (pa.float64(), st.floats()),
    "bool": (pa.bool_(), st.booleans()),
    "binary": (pa.binary(), st.binary(max_size=6)),
    "strings": (pa.list_(pa.string()), st.lists(texts, max_size=3)),
    "messages": (pa.list_(MESSAGE), st.lists(st.fixed_dictionaries({"role": texts, "content": texts}), max_size=3)),
    "message": (MESSAGE, st.fixed_dictionaries({"role": texts, "content": texts})),
    "struct": (pa.struct([("x", pa.int64())]), st.fixed_dictionaries({"x": st.integers(0, 9)})),
    "null": (pa.null(), st.none()),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), texts),
}
column_names = st.sampled_from(["prompt", "chosen", "rejected", "extra", "score", "text", "[b]x[/b]", ""])


@st.composite
def arrow_tables(draw):
    rows = draw(st.integers(0, 6))
    names = draw(st.lists(column_names, max_size=5, unique=True))
    columns = {}
    for name in names:
        arrow_type, values = ARROW_TYPES[draw(st.sampled_from(sorted(ARROW_TYPES)))]
        cells = draw(st.lists(st.none() | values, min_size=rows, max_size=rows))
        if arrow_type == pa.null():
            cells = [None] * rows
        if pa.types.is_dictionary(arrow_type):
            columns[name] = pa.array(cells, pa.string()).dictionary_encode()
        else:
            columns[name] = pa.array(cells, arrow_type)
    return pa.table(columns) if columns else pa.table({"x": pa.array([None] * rows, pa.null())})


@FUZZ
@given(table=arrow_tables(), mapping=st.sampled_from([{}, {"prompt_col": "text"}, {"chosen_col": "extra"}]))
def test_random_parquet_columns_and_types(tmp_path, table, mapping):
    path = tmp_path / "columns.parquet"
    pq.write_table(table, path)
    load_or_refuse(path, **mapping)


def test_parquet_strings_that_are_not_utf8_are_rejected_by_row(tmp_path):
    not_utf8 = pa.array([b"fine", b"\xff\xfe", b"also fine"], pa.binary()).view(pa.string())
    path = tmp_path / "bytes.parquet"
    pq.write_table(pa.table({"prompt": ["p", "q", "r"], "chosen": not_utf8, "rejected": ["x", "y", "z"]}), path)
    report = load_or_refuse(path).report
    assert (report.read, report.loaded) == (3, 2)
    assert [(r.reason, r.location) for r in report.rejections] == [("invalid_utf8", "row 1")]


# "\udcff" is written with surrogatepass: bytes that are not UTF-8.
cells = texts | st.sampled_from(['"', '""', ",", "\t", "\n", "\r", "a\nb", "=1+1", "\\", "\udcff"])


@FUZZ
@given(header=st.lists(column_names | cells, min_size=1, max_size=5),
       rows=st.lists(st.lists(cells, max_size=6), max_size=6),
       delimiter=st.sampled_from([",", "\t"]), name=st.sampled_from(["d.csv", "d.tsv", "d.csv.gz"]))
@example(header=["prompt", "\udcff"], rows=[["p", "x"]], delimiter=",", name="d.csv")  # a header not UTF-8
def test_random_csv_columns_and_cells(tmp_path, header, rows, delimiter, name):
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8", "surrogatepass")
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    load_or_refuse(path)


# ---------------------------------------------------------------------------------
# The command line: random subcommands, flags, values and paths
# ---------------------------------------------------------------------------------

# Subcommands and flags that start real work (build models, open the app) are left out;
# every model argument names something that is not a model, so scoring, training, eval
# and iterate must fail fast on it. Every path is inside the test's folder.
SKIPPED = {("demo", "build"), ("open", "--demo-models"), ("score", "--demo"), ("eval", "--demo"),
           ("iterate", "--demo")}
COUNTS = ("--prompts", "--samples", "--responses", "--rounds", "--pairs", "--max-new-tokens", "--bad-rows")
"""Options whose value is how much work to do: a huge one is real work, so they stay small."""
WEIRD = ["", " ", "-", "--", "日本語", "\u202e", "😀", "[/]", "[bold red]x[/]", "[@click=app.quit]", "\udcff",
         "'); DROP TABLE annotations; --", "__import__('os').system('false')"]
NUMBERS = ["0", "-1", "1", "3", "0.5", "-0", "1e309", "nan", "inf", "10%", "150%", "1,000", "0x10", "9" * 30, "abc"]
EXPRESSIONS = {
    "--margin": ["external=score", "external=score_chosen,score_rejected", "implicit=score", "=x", "a=b=c",
                 "external", "../x", "x=,", "[/]=y", "ext=missing_col", "external=prompt", "external=[/]"],
    "--mode": ["dm-mul", "dm-add", "top", "mid", "bot", "random", "low-gap", "nope"],
    "--m1": ["-2", "external=-2", "x=1", "a=b", "auto"], "--m2": ["auto", "external=auto", "3", "x=auto", "a=b"],
    "--source": ["external", "implicit", "nope"], "--budget": ["10", "0.5", "50%", "0", "-3", "200%", "x", "1.5"],
    "--sources": ["external", "ifd", "external,implicit,ifd", "nope", ",", ""],
    "--format": ["auto", "jsonl", "parquet", "csv", "save_to_disk", "xml"],
    "--device": ["cpu", "auto", "cuda:9", "nope"], "--dtype": ["float32", "float13", "auto"],
    "--loss": ["dpo", "ipo", "hinge", "kto", "nope"],
}


@pytest.fixture
def cli_world(tmp_path, monkeypatch):
    """A folder of things to point the CLI at: a good dataset, bad ones, an export, odd names.

    It is the current folder, one level below `tmp_path`, so that a write beside the
    current folder shows up in `tmp_path`.
    """
    import textual_serve.server

    import dmtui.app

    tmp_path = tmp_path / "cwd"
    tmp_path.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dmtui.app.DmtuiApp, "run", lambda self, *a, **k: None)  # `open` starts no app
    monkeypatch.setattr(textual_serve.server.Server, "serve", lambda self, *a, **k: None)  # nor `serve` a server
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "score": i % 3 - 1.0,
             "score_chosen": float(i), "score_rejected": 1.0, "[/]": float(i)} for i in range(12)]
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "日本.jsonl").write_text(good.read_text())
    (tmp_path / "bad.jsonl").write_bytes(b"{nope\n\xff\n[1]\n")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    (tmp_path / "not-a-manifest.json").write_text('{"manifest_version": 1}')
    from dmtui.cli import main

    assert run_cli(main, ["export", str(good), "--margin", "external=score", "--budget", "5",
                          "--out", str(tmp_path / "export")])[0] == 0
    paths = ["good.jsonl", "日本.jsonl", "bad.jsonl", "empty.jsonl", "folder", "missing.jsonl", "missing/deep/x",
             "export", "export/manifest.json", "not-a-manifest.json", "good.dmtui", "[/].jsonl", "\udcff.jsonl",
             "out", "out/nested", "runs/r1"]
    return main, [str(tmp_path / p) for p in paths] + ["good.jsonl", "out2"]


def run_cli(main, argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in-process: (exit code, stdout, stderr), with real-life text streams.

    stdout is strict UTF-8 and stderr backslash-replaces, as Python's are on a UTF-8
    terminal; signal handlers a command installs are put back afterwards.
    """
    import signal

    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as exit:  # argparse: --help (0) and usage errors (2)
                code = exit.code
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    streams = []
    for stream in (stdout, stderr):
        stream.flush()
        streams.append(stream.buffer.getvalue().decode("utf-8"))
    return code, streams[0], streams[1]


def _subcommand_options(parser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], list]:
    """{("info",): [argparse actions], ("demo", "generate"): [...], ...} of the real parser."""
    import argparse

    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_subcommand_options(sub, (*path, name)))
    if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        found[path] = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    return found


@st.composite
def command_lines(draw, paths: list[str]):
    from dmtui.cli import build_parser

    commands = _subcommand_options(build_parser())
    command = draw(st.sampled_from(sorted(c for c in commands if c not in SKIPPED)))
    argv = list(command)
    actions = commands[command]
    values = st.sampled_from(paths) | st.sampled_from(NUMBERS) | st.sampled_from(WEIRD)
    # Mostly give what the command requires (and a margin), so that runs get past argparse.
    needed = [a for a in actions if a.required or (not a.option_strings and a.nargs in (None, "?"))
              or "--margin" in a.option_strings]
    chosen = [a for a in needed if draw(st.integers(0, 9)) > 0]
    chosen += draw(st.lists(st.sampled_from([a for a in actions if a not in needed]), max_size=5, unique_by=id))
    for action in draw(st.permutations(chosen)):
        if not action.option_strings:  # a positional
            argv.append(draw(st.sampled_from(paths) | st.sampled_from(WEIRD)))
            continue
        option = action.option_strings[-1]
        if (command[0], option) in SKIPPED:
            continue
        argv.append(option)
        if action.nargs == 0:
            continue
        if option in COUNTS:
            pool = st.sampled_from(["-1", "0", "1", "2", "x", "1.5"])
        elif option in EXPRESSIONS:
            pool = st.sampled_from(EXPRESSIONS[option]) | values
        elif action.choices:
            pool = st.sampled_from(list(action.choices)) | values
        else:
            pool = values
        argv.extend(draw(st.lists(pool, min_size=1, max_size=2 if action.nargs == "+" else 1)))
    return argv


@settings(FUZZ, max_examples=int(os.environ.get("DMTUI_FUZZ_EXAMPLES", "60")))
@given(data=st.data())
def test_random_command_lines_exit_with_a_code_and_no_traceback(cli_world, data):
    main, paths = cli_world
    argv = data.draw(command_lines(paths), label="argv")
    code, out, err = run_cli(main, argv)
    assert [p.name for p in Path.cwd().parent.iterdir()] == ["cwd"], (argv, "wrote beside the current folder")
    assert isinstance(code, int) and code in (0, 1, 2, 130), (argv, code)
    assert "Traceback" not in out + err, (argv, err)
    if code != 0 and "--json" in argv and out.strip():
        json.loads(out.strip().splitlines()[-1])  # a machine reader gets JSON, the failure in it
    elif code != 0:
        assert "error" in err, (argv, err)
        assert len(err.strip().splitlines()) <= 40, (argv, err)
