"""The dmtui Textual app: one workspace, its dataset, and the curation screens."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from core.loading import LoadedDataset
from core.model_trust import ModelTrust
from core.workspace import Workspace
from dmtui.commands import DmtuiCommands
from dmtui.screens.dataset import DatasetScreen


class DmtuiApp(App):
    """Curate a preference dataset: look at it, score it, select, export, train."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "dmtui"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]
    COMMANDS = App.COMMANDS | {DmtuiCommands}

    def __init__(self, workspace: Workspace, build_demo_models: bool = False,
                 margin_specs: list[str] | None = None, model_trust: ModelTrust = ModelTrust()) -> None:
        super().__init__()
        self.workspace = workspace
        self.build_demo_models = build_demo_models
        self.margin_specs = margin_specs
        self.model_trust = model_trust
        self.dataset: LoadedDataset | None = None
        self.sub_title = workspace.root.name

    def on_mount(self) -> None:
        self.main_screen = DatasetScreen(self.workspace, self.build_demo_models, self.margin_specs,
                                         self.model_trust)
        self.push_screen(self.main_screen)

    def action_help(self) -> None:
        from dmtui.screens.help import HelpScreen

        self.push_screen(HelpScreen())
