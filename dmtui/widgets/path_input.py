"""A path field that completes like a shell: the rest of the first match is suggested as
you type, and Tab (or Right at the end) takes it."""

from __future__ import annotations

import os
from pathlib import Path

from textual.binding import Binding
from textual.suggester import Suggester
from textual.widgets import Input


class PathSuggester(Suggester):
    """The first entry of the typed folder whose name starts with what follows the last '/'."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        expanded = os.path.expanduser(value)
        folder, prefix = os.path.split(expanded)
        try:
            names = sorted(entry.name for entry in os.scandir(folder or ".")
                           if entry.name.startswith(prefix) and (prefix.startswith(".") or not entry.name.startswith(".")))
        except OSError:
            return None
        for name in names:
            if name == prefix and not Path(expanded).is_dir():
                continue
            full = os.path.join(folder, name)
            rest = name[len(prefix):] + (os.sep if os.path.isdir(full) else "")
            if rest:
                return value + rest
        return None


class PathInput(Input):
    BINDINGS = [Binding("tab", "complete", "Complete", show=False)]

    def __init__(self, value: str = "", *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(value, placeholder=placeholder, suggester=PathSuggester(), id=id, select_on_focus=False)

    def action_complete(self) -> None:
        """Take the suggestion; with none, Tab moves on as usual."""
        if self._suggestion and len(self._suggestion) > len(self.value):
            self.value = self._suggestion
            self.cursor_position = len(self.value)
        else:
            self.screen.focus_next()
