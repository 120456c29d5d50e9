"""update_text: a status line changes without a layout of the whole screen, unless its
height must change."""

from __future__ import annotations

from textual.app import App
from textual.widgets import Static

from dmtui.widgets.static_text import update_text


async def test_a_layout_only_when_the_height_changes(monkeypatch):
    class OneLine(App):
        def compose(self):
            yield Static("first", id="line")

    app = OneLine()
    async with app.run_test(size=(40, 10)) as pilot:
        line = app.query_one("#line", Static)
        layouts = []
        real_refresh = Static.refresh
        monkeypatch.setattr(Static, "refresh", lambda self, *a, layout=False, **k: (
            layouts.append(layout), real_refresh(self, *a, layout=layout, **k))[1])
        update_text(line, "second")
        update_text(line, "second")  # unchanged: nothing at all
        await pilot.pause()
        assert str(line.render()) == "second" and line.size.height == 1
        assert True not in layouts and len(layouts) == 1
        update_text(line, "two\nlines")
        await pilot.pause()
        assert True in layouts and line.size.height == 2
