"""Updating a Static's text without laying the whole screen out again.

`Static.update` asks for a layout of the screen, and a layout repaints every widget on
it: at 160x50 that costs tens of milliseconds, several times per keystroke when a few
status lines change. `update_text` skips an unchanged text and asks for a layout only
when the new text needs a different height.
"""

from __future__ import annotations

from textual.visual import VisualType
from textual.widgets import Static


def update_text(static: Static, content: VisualType) -> None:
    """`static.update(content)`, with a layout only if the widget's height must change."""
    if isinstance(content, str) and static.content == content:
        return
    static.update(content, layout=False)
    static.clear_cached_dimensions()
    width, height = static.content_size
    if not width:  # not laid out (a hidden tab): the layout that shows it sizes it
        return
    height_style = static.styles.height
    auto_height = height_style is None or height_style.is_auto
    if auto_height and static.get_content_height(static.size, static.app.size, width) != height:
        static.refresh(layout=True)
