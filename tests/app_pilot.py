"""Helpers for driving the app with Textual's pilot, shared by the app tests."""

from __future__ import annotations

from dmtui.widgets.curation_pane import CurationPane


async def settle(app, pilot) -> None:
    """Let the screen's and the curation pane's workers finish and their results draw."""
    for _ in range(3):
        await pilot.pause()
        await app.screen.workers.wait_for_complete()
        pane = app.screen.query(CurationPane)
        if pane:
            await pane.first().workers.wait_for_complete()
    await pilot.pause()


async def open_curate(app, pilot) -> CurationPane:
    await settle(app, pilot)
    await pilot.press("2")
    await settle(app, pilot)
    return app.screen.query_one(CurationPane)


async def wait_for(predicate, pilot, seconds: float = 120.0, seen=None) -> None:
    """Poll `predicate` every 0.1 s while the app runs; fail after `seconds`, with what `seen()`
    returns (what the test was watching) in the message."""
    for _ in range(int(seconds * 10)):
        if predicate():
            return
        await pilot.pause(0.1)
    raise AssertionError("timed out waiting" + (f"; seen:\n{seen()}" if seen is not None else ""))
