"""What the curator reads: the pair view of long multi-turn pairs, the table's sorts and
columns, search by the dataset's own id, remembered view settings, DM-MUL's log-odds, and
plots that follow the selection's margins."""

from __future__ import annotations

import json

import numpy as np
import pytest
from app_pilot import open_curate, settle
from textual.containers import VerticalScroll
from textual.widgets import Input, Select, TabbedContent

from core.store.workspace import Workspace
from dmtui.app import DmtuiApp
from dmtui.screens.pair_detail import DIFF_WORK_LIMIT, PairDetailScreen, marked_difference
from dmtui.widgets.curation_pane import CurationPane
from dmtui.widgets.examples_table import ExamplesTable
from dmtui.widgets.margin_plots import MarginPlots

N = 120
MARGINS = ["external=sc,sr", "implicit=im"]
WORDS = "the a rice cook python function garden water plant soil test value file read".split()


def words(rng, n: int) -> str:
    return " ".join(rng.choice(WORDS, n))


@pytest.fixture
def hh_workspace(tmp_path) -> Workspace:
    """HH-RLHF-shaped text pairs: four earlier exchanges, long replies with leading blank
    lines, the dataset's own id and topic, and two margin sources."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(N):
        history = "".join(f"\n\nHuman: {words(rng, 20)}\n\nAssistant: {words(rng, 30)}" for _ in range(4))
        rows.append({
            "id": f"demo-{i:06d}", "topic": "cooking" if i % 3 else "python",
            "prompt": f"{history}\n\nHuman: last question {i}\n\nAssistant:",
            "chosen": f"\n\n  \n answer {i} " + words(rng, 400), "rejected": f"\n reply {i} " + words(rng, 400),
            "sc": float(rng.normal(1, 3)), "sr": float(rng.normal(0, 3)), "im": float(rng.normal(0, 3)),
        })
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return Workspace.open_or_create(str(data), tmp_path / "ws")


async def table_in_focus(app, pilot):
    """The Curate tab's pane and its examples table, focused (keys go to the table)."""
    pane = await open_curate(app, pilot)
    table = pane.query_one(ExamplesTable)
    table.focus()
    return pane, table


async def test_pair_view_keeps_long_replies_readable(hh_workspace):
    app = DmtuiApp(hh_workspace, margin_specs=MARGINS)
    async with app.run_test(size=(100, 32)) as pilot:
        pane, table = await table_in_focus(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, PairDetailScreen)
        prompt = str(screen.query_one("#prompt").render())
        assert prompt.startswith("user: last question")  # HH text loads as a conversation
        assert screen.query_one("#prompt-pane").border_subtitle == "p: show the 8 earlier"
        chosen = str(screen.query_one("#chosen").render())
        assert chosen.split("\n")[0].strip() and "answer" in chosen.split("\n")[0]
        assert screen.query_one("#chosen").render().spans  # the differences are marked

        header = str(screen.query_one("#pair-header").render())
        index = screen.index
        assert f"id demo-{index:06d}" in header and "topic" in header

        await pilot.press("pagedown", "pagedown")  # both replies scroll, their titles stay
        for pane_id in ("#chosen-pane", "#rejected-pane"):
            scroller = screen.query_one(pane_id, VerticalScroll)
            assert scroller.scroll_y > 0 and scroller.border_title in ("chosen", "rejected")
            assert scroller.region.y < screen.query_one("#responses").region.bottom
        await pilot.press("p")
        assert screen.query_one("#prompt-pane").border_title == "prompt: all 9 turns"
        assert "last question" in str(screen.query_one("#prompt").render())

        unselected = int(np.flatnonzero(~pane.selection.mask)[0])
        screen.rows = np.array([unselected])
        screen.position = 0
        screen.show_pair()
        assert "not selected: " in str(screen.query_one("#pair-header").render())


async def test_walking_long_replies_never_waits_on_the_diff(hh_workspace, monkeypatch):
    import dmtui.screens.pair_detail as pair_detail

    started = []
    real = pair_detail.marked_difference
    monkeypatch.setattr(pair_detail, "marked_difference", lambda *a: started.append(1) or real(*a))
    app = DmtuiApp(hh_workspace, margin_specs=MARGINS)
    async with app.run_test(size=(100, 32)) as pilot:
        pane, _ = await table_in_focus(app, pilot)
        await pilot.press("enter", "]", "]", "]")
        screen = app.screen
        assert screen.position == 3  # each ] answered; the diffs run in a worker
        await settle(app, pilot)
        await screen.workers.wait_for_complete()
        await pilot.pause()
        assert screen.query_one("#chosen").render().spans and len(started) >= 1


def test_the_diff_falls_back_to_lines_then_to_nothing_on_huge_texts():
    per_side = int(DIFF_WORK_LIMIT ** 0.5) + 10
    left, right = (" ".join(f"{prefix}{i}" for i in range(per_side)) for prefix in "wv")
    chosen, rejected = marked_difference(left + "\nsame line\n", right + "\nsame line\n")
    assert [rejected.plain[s.start:s.end] for s in rejected.spans] == [right + "\n"]  # whole lines
    assert chosen.plain == left + "\nsame line\n"
    huge = "\n".join(f"line {i}" for i in range(per_side))
    chosen, rejected = marked_difference(huge, huge[::-1])
    assert not chosen.spans and not rejected.spans and chosen.plain == huge


async def test_table_sorts_columns_and_search_by_own_id(hh_workspace):
    app = DmtuiApp(hh_workspace, margin_specs=MARGINS)
    async with app.run_test(size=(140, 40)) as pilot:
        pane, table = await table_in_focus(app, pilot)
        await pilot.press("pagedown")
        assert table.cursor > 0
        await pilot.press("o")  # the first sort step: the lowest external margins first
        await settle(app, pilot)
        assert (pane.view.sort, pane.view.descending) == ("external", False)
        assert table.cursor == 0 and table.scroll_offset.y == 0  # a sort change jumps to the top
        external = pane.session.effective_margin("external")[table.rows]
        assert (np.diff(external) >= 0).all()

        await pilot.press("c")  # the dataset's own columns in the table
        header = "".join(str(table.render_line(0).text))
        assert "id" in header.split() and "topic" in header.split()
        first = "".join(str(table.render_line(1).text))
        assert f"demo-{int(table.rows[0]):06d}" in first

        pane.query_one("#search", Input).value = "DEMO-000009"
        await settle(app, pilot)
        assert table.rows.tolist() == [9]


async def test_plots_follow_the_swapped_margins(hh_workspace):
    app = DmtuiApp(hh_workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_curate(app, pilot)
        plots = pane.query_one(MarginPlots)
        external = pane.margins["external"]
        top = int(np.nanargmax(external))
        assert plots.plots.views[0].all_pairs.edges[0] == pytest.approx(np.nanmin(external))
        pane.annotations.set(top, pane.store.update(pane.pair_ids[top].as_py(), swapped=True))
        pane.reselect()
        await settle(app, pilot)
        histogram = plots.plots.views[0].all_pairs
        assert histogram.edges[0] == pytest.approx(-external[top])  # drawn as the selection sees it
        assert "M1" in plots.border_title and "M2" in plots.border_title
        for _ in plots.views:
            await pilot.press("v")
        assert plots.view == 0


async def test_filter_sort_and_tab_are_remembered_with_the_settings(hh_workspace):
    app = DmtuiApp(hh_workspace, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane, _ = await table_in_focus(app, pilot)
        await pilot.press("o", "o")  # external ↑, then implicit ↑
        pane.query_one("#row-filter", Select).value = "selected"
        await settle(app, pilot)
        await pilot.pause(0.3)
        assert (pane.view.row_filter, pane.view.sort, pane.view.descending) == ("selected", "implicit", False)
    assert Workspace.open(hh_workspace.root).read_settings()["view"] == {
        "filter": "selected", "sort": "implicit", "descending": False}

    assert Workspace.open(hh_workspace.root).read_settings()["tab"] == "curate"

    app = DmtuiApp(Workspace.open(hh_workspace.root), margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)  # no key pressed: it opens on the Curate tab, the table focused
        assert app.screen.query_one(TabbedContent).active == "curate"
        pane = app.screen.query_one(CurationPane)
        assert app.focused is pane.query_one(ExamplesTable)
        assert pane.query_one("#row-filter", Select).value == "selected"
        table = pane.query_one(ExamplesTable)
        assert pane.selection.mask[table.rows].all() and len(table.rows) == pane.selection.selected
        implicit = pane.session.effective_margin("implicit")[table.rows]
        assert (np.diff(implicit) >= 0).all()
        assert "sorted by implicit ↑" in str(table.border_title)

    read_only = Workspace.open(hh_workspace.root)
    read_only.set_read_only("opened with --read-only")
    before = read_only.settings_path.read_bytes()
    app = DmtuiApp(read_only, margin_specs=MARGINS)
    async with app.run_test(size=(120, 40)) as pilot:
        pane, _ = await table_in_focus(app, pilot)
        await pilot.press("o", "1")  # a read-only window changes its view and tab, and remembers neither
        await settle(app, pilot)
        await pilot.pause(0.3)
        assert pane.view.sort != "implicit" and app.screen.query_one(TabbedContent).active == "dataset"
        assert not [n for n in app._notifications if n.severity == "error"]
    assert read_only.settings_path.read_bytes() == before


async def test_dm_mul_pairs_whose_score_rounds_to_one_are_told_apart_by_log_odds(hh_workspace):
    app = DmtuiApp(hh_workspace, margin_specs=MARGINS)
    async with app.run_test(size=(140, 40)) as pilot:
        pane = await open_curate(app, pilot)
        selection = pane.selection
        assert selection.params.mode == "dm-mul" and selection.log_odds is not None
        table = pane.query_one(ExamplesTable)
        titles = [column.title for column in table.columns]
        assert "logodds" in titles and "score" not in titles
        cells = table.columns[titles.index("logodds")].cell
        saturated = [int(i) for i in table.rows if f"{selection.score[i]:.3f}" == "1.000"]
        assert len(saturated) >= 3  # the probability cannot rank these ...
        shown = [cells(i) for i in saturated]
        assert len(set(shown)) == len(shown)  # ... their log-odds can, in the table's order
        assert [float(text) for text in shown] == sorted((float(text) for text in shown), reverse=True)
