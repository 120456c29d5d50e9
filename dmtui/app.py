"""The dmtui Textual app: a launcher, or one workspace with its dataset and curation screens."""

from __future__ import annotations

from pathlib import Path

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.widgets import Input

from core.loading import LoadedDataset
from core.model_trust import ModelTrust
from core.workspace import Workspace
from dmtui.commands import DmtuiCommands


class DmtuiApp(App):
    """Curate a preference dataset: look at it, score it, select, export, train.

    With a workspace the app opens on it; without one (`dmtui`, `dmtui FOLDER`) it opens
    the launcher, which picks a recent workspace, a dataset or the demo.
    """

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "dmtui"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]
    COMMANDS = App.COMMANDS | {DmtuiCommands}

    def __init__(self, workspace: Workspace | None = None, build_demo_models: bool = False,
                 margin_specs: list[str] | None = None, model_trust: ModelTrust = ModelTrust(),
                 start_folder: Path | None = None) -> None:
        super().__init__()
        self.workspace = workspace
        self.build_demo_models = build_demo_models
        self.margin_specs = margin_specs
        self.model_trust = model_trust
        self.start_folder = start_folder or Path.cwd()
        self.dataset: LoadedDataset | None = None
        self.main_screen = None
        self._quitting = False

    def on_mount(self) -> None:
        if self.workspace is None:
            from dmtui.screens.launcher import LauncherScreen

            self.push_screen(LauncherScreen(self.start_folder))
        else:
            self.open_workspace(self.workspace, self.build_demo_models, self.margin_specs)

    def open_workspace(self, workspace: Workspace, build_demo_models: bool = False,
                       margin_specs: list[str] | None = None) -> None:
        """Show `workspace` (from the command line or the launcher) and remember it as recent."""
        from core.recent import remember_workspace
        from dmtui.screens.dataset import DatasetScreen

        self.workspace, self.build_demo_models = workspace, build_demo_models
        self.sub_title = workspace.root.name
        remember_workspace(workspace.root)
        from dmtui.screens.launcher import LauncherScreen

        self.main_screen = DatasetScreen(workspace, build_demo_models, margin_specs, self.model_trust)
        if isinstance(self.screen, LauncherScreen):
            self.switch_screen(self.main_screen)
        else:
            self.push_screen(self.main_screen)

    async def on_event(self, event: events.Event) -> None:
        """Editing keys of a focused field run in the field's own queue, in the order typed.

        Textual inserts printable keys when the field handles the key event, but runs
        bound keys (backspace, delete, cursor moves) only once the event has bubbled up to
        the app: in a burst (a paste, a fast typist, keys over a slow SSH link) the digits
        after three backspaces were typed first and then deleted. Queued on the field, the
        action runs after the keys before it and before the keys after it.
        """
        focused = self.focused if isinstance(event, events.Key) and not event.is_forwarded else None
        if isinstance(focused, Input):
            action = next((binding.action for key in event.aliases
                           for binding in focused._bindings.key_to_bindings.get(key, [])), None)
            if action is not None:
                if not await self._check_bindings(event.key, priority=True):
                    focused.call_later(focused.run_action, action)
                return
        await super().on_event(event)

    def action_help(self) -> None:
        from dmtui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """q / ctrl+q: quit at once when nothing runs; else ask, and on yes stop the work,
        wait for it (scoring keeps its chunks, training its checkpoint) and quit."""
        from dmtui.screens.confirm import ConfirmScreen

        running = self.main_screen.running_work() if self.main_screen is not None else []
        if not running:
            self.exit()
            return
        if self._quitting:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._quitting = True
                self.notify("Stopping " + ", ".join(item.split(" (")[0] for item in running) + " before quitting…",
                            timeout=60)
                self.run_worker(self._stop_and_exit(), group="quit")

        body = "Still running:\n" + "\n".join(f"  • {item}" for item in running)
        await self.push_screen(ConfirmScreen("Stop the work and quit?", body, yes="stop it and quit",
                                             no="keep working"), answered)

    async def _stop_and_exit(self) -> None:
        await self.main_screen.stop_all_work()
        self.exit()
