"""The app's reader of `dmtui … --jsonl` children, and what `dmtui score --jsonl` puts on a line."""

import asyncio
import json
import sys

from core.scoring.run import ScoringReport, SourceReport
from dmtui.headless.score import event_report
from dmtui.workers import JsonlProcess


def test_a_line_far_over_64_kib_is_read_whole():
    """asyncio's default reader stops at 64 KiB ("chunk exceed the limit"); a report line may be longer."""
    ids = [f"{i:016x}" for i in range(60_000)]  # about 1.1 MB on one line
    child = JsonlProcess([sys.executable, "-c", "import json; print(json.dumps({'event': 'done', "
                          "'ids': [f'{i:016x}' for i in range(60000)]})); print('plain text')"])

    async def read() -> list[dict]:
        return [event async for event in child.events()]

    events = asyncio.run(read())
    assert events == [{"event": "done", "ids": ids}, {"event": "text", "text": "plain text"}]
    assert child.returncode == 0


def test_a_scoring_event_carries_counts_not_id_lists():
    """Token-identical pairs are counted on the line (their ids are in the score table)."""
    source = SourceReport(source="external", fingerprint="f", pairs=5000, scored=5000,
                          token_identical_ids=[f"{i:016x}" for i in range(4000)])
    data = event_report(ScoringReport(sources={"external": source}, device="cpu"))
    line = json.dumps(data)
    assert data["sources"]["external"]["token_identical"] == 4000
    assert "token_identical_ids" not in data["sources"]["external"] and len(line) < 4096
    assert source.token_identical_ids  # the report itself is left whole
