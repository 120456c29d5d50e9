"""Every action of the app in the command palette (Ctrl+P), named "area: what it does"."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (palette name, help, action string run on the main screen)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("dataset: show the load report", "format, counts, rejected rows, score state", "tab('dataset')"),
    ("dataset: list bad rows", "every rejected row with its line, column and reason", "show_rejections"),
    ("curate: tune the selection", "mode, budget, M1/M2, plots and the examples table", "tab('curate')"),
    ("curate: spot-check BOT", "walk the lowest-margin pairs one key at a time", "curation('spot_check')"),
    ("curate: next plot", "cycle the histograms and the scatter", "curation('next_plot')"),
    ("curate: sort by the next column", "row, each margin, the selection score", "curation('sort_next')"),
    ("curate: reverse the sort", "ascending / descending", "curation('sort_reverse')"),
    ("curate: search", "text or pair_id", "curation('search')"),
    ("score: settings and progress (3)", "the Score tab: models, sources, per-source progress", "tab('score')"),
    ("score: start scoring now (S)", "external, implicit and IFD margins with the Score tab's settings", "score"),
    ("run: export and train settings (4)", "the Run tab: export folder, model, training options, curves",
     "tab('run')"),
    ("run: export the selection now (E)", "write the current selection with its manifest", "export"),
    ("run: start training on the latest export (T)", "DPO in a subprocess, after a confirmation", "train"),
    ("run: compare training runs (R)", "every run of this workspace: curves overlaid and final values", "runs"),
    ("work: stop scoring or training (X)", "scoring keeps finished chunks; training asks, then checkpoints",
     "stop_work"),
    ("help: how dmtui works", "the workflow and every key", "help"),
)


class DmtuiCommands(Provider):
    """Palette entries for the main screen's actions (none on the launcher: no workspace is open)."""

    async def discover(self) -> Hits:
        if self.app.main_screen is None:
            return
        for name, help_text, action in COMMANDS:
            yield DiscoveryHit(name, partial(self._run, action), help=help_text)

    async def search(self, query: str) -> Hits:
        if self.app.main_screen is None:
            return
        matcher = self.matcher(query)
        for name, help_text, action in COMMANDS:
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self._run, action), help=help_text)

    async def _run(self, action: str) -> None:
        await self.app.main_screen.run_action(action)
