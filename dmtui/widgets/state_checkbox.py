"""A checkbox whose state reads without colour: ✓ when checked, an empty box when not."""

from __future__ import annotations

from textual.widgets import Checkbox


class StateCheckbox(Checkbox):
    """Textual's checkbox shows the same X either way and tells the states apart by colour
    alone, which some terminal colour schemes (and screen readers of the text) lose."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - overrides the class constant Checkbox draws
        return "✓" if self.value else " "
