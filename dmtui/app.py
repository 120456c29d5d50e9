"""The dmtui Textual app: a launcher, or one workspace with its dataset and curation screens."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.message_pump import MessagePump

from core.data.loading import LoadedDataset
from core.models.trust import ModelTrust
from core.store.workspace import Workspace
from dmtui.commands import DmtuiCommands

KEY_CHECK_S = 0.5
"""How often a key still on its way through the focus chain is looked at: a widget removed
while the key waited in its queue never reports it, and the keys behind it go out then."""
KEY_WAIT_S = 10.0
"""The longest the keys behind one may wait for it (a handler that awaits something long)."""
QUIT_WAIT_S = 15.0
"""After a yes to quit, how long the work may take to stop before the app offers to kill it."""


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
        self._keys_waiting: deque[events.Key] = deque()
        self._key_on_its_way: events.Key | None = None
        self._key_at: MessagePump | None = None
        self._key_turn_scheduled = False
        self._key_overdue: asyncio.TimerHandle | None = None

    def on_mount(self) -> None:
        if self.workspace is None:
            from dmtui.screens.launcher import LauncherScreen

            self.push_screen(LauncherScreen(self.start_folder))
        else:
            self.open_workspace(self.workspace, self.build_demo_models, self.margin_specs)

    def open_workspace(self, workspace: Workspace, build_demo_models: bool = False,
                       margin_specs: list[str] | None = None) -> None:
        """Show `workspace` (from the command line or the launcher) and remember it as recent."""
        from core.store.recent import remember_workspace
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
        """Keys go through the focus chain one at a time, each to the focus its predecessor left.

        Textual routes a key to the focused widget as soon as it arrives and runs the key's
        bindings only once it has bubbled back up to the app. In a burst (a paste, a fast
        typist, keys over a slow SSH link) every key was therefore routed before the first
        one had acted: after `/` the letters of a search still went to the table (`q`
        quit the app), and an Input's backspaces ran after the digits typed behind them.
        Here a key waits until the one before it has bubbled back to the app or been
        consumed on its way, and the focus changes the earlier key asked for are made.
        """
        if isinstance(event, events.Key) and not event.is_forwarded:
            self._keys_waiting.append(event)
            if self._key_on_its_way is None and not self._key_turn_scheduled:
                await self._send_waiting_keys()
            return
        await super().on_event(event)
        if isinstance(event, events.Key) and event is self._key_on_its_way:
            self._key_done(event)  # back at the app, its bindings (for the focus as it is now) ran

    async def _send_waiting_keys(self) -> None:
        self._key_turn_scheduled = False
        while self._keys_waiting and self._key_on_its_way is None and not self._key_turn_scheduled:
            key = self._keys_waiting.popleft()
            target = self.focused or self.screen
            self._key_on_its_way, self._key_at = key, target
            await super().on_event(key)  # Textual's routing: priority bindings, else to the focus
            if not key.is_forwarded:  # a priority binding took it
                self._key_done(key)
            else:
                self._watch_key(key, 0.0)
                if not target.call_later(self._follow_key, key, target):
                    self._key_done(key)

    def _watch_key(self, key: events.Key, waited: float) -> None:
        """Let the next keys go if the node holding `key` was removed (or after KEY_WAIT_S)."""
        if key is not self._key_on_its_way:
            return
        node = self._key_at
        alive = node is not None and not (node._closing or node._closed) and (node is self or node.is_attached)
        if alive and waited < KEY_WAIT_S:
            self._key_overdue = asyncio.get_running_loop().call_later(KEY_CHECK_S, self._watch_key, key,
                                                                      waited + KEY_CHECK_S)
        else:
            self._key_done(key)

    def _follow_key(self, key: events.Key, node: MessagePump) -> None:
        """Called once `node` has handled `key`: done if it went no further, else follow it up.

        The last hop is always followed on the app: a key that came back is handled there
        before this call, so it is done by then, and one that did not is done here."""
        if key is not self._key_on_its_way:
            return
        parent = node._parent
        stopped = key._stop_propagation or not (node.is_parent_active and node.is_attached)
        if node is self or parent is None or (stopped and parent is not self):
            self._key_done(key)
        elif parent.call_later(self._follow_key, key, parent):
            self._key_at = parent
        else:
            self._key_done(key)  # the parent is closing: the key went nowhere

    def _key_done(self, key: events.Key) -> None:
        """The next key goes out after what this one queued on the app (a deferred focus) has run."""
        if key is not self._key_on_its_way:
            return
        if self._key_overdue is not None:
            self._key_overdue.cancel()
            self._key_overdue = None
        self._key_on_its_way = self._key_at = None
        self._key_turn_scheduled = True
        self.call_later(self._send_waiting_keys)

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
        if self._quitting:  # q again while the work stops: offer to kill it now
            self._offer_to_kill()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._quitting = True
                self.notify("Stopping " + ", ".join(item.split(" (")[0] for item in running) + " before quitting… "
                            "(q again to kill it)", timeout=60)
                self.run_worker(self._stop_and_exit(), group="quit")
                self.set_timer(QUIT_WAIT_S, self._offer_to_kill)

        body = "Still running:\n" + "\n".join(f"  • {item}" for item in running)
        await self.push_screen(ConfirmScreen("Stop the work and quit?", body, yes="stop it and quit",
                                             no="keep working"), answered)

    async def _stop_and_exit(self) -> None:
        await self.main_screen.stop_all_work()
        self.exit()

    def _offer_to_kill(self) -> None:
        """Work that does not stop (a hung GPU step, a stuck collective): ask to kill it and quit."""
        from dmtui.screens.confirm import ConfirmScreen

        waiting = self.main_screen.running_work()
        if not waiting or self._exit or isinstance(self.screen, ConfirmScreen):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.main_screen.kill_children()
                self.exit()

        body = ("Still waiting for:\n" + "\n".join(f"  • {item.split(' (')[0]}" for item in waiting)
                + "\n\nKilling stops scoring and training at once: what they saved at their last checkpoint "
                "is kept, the chunk or step in progress is lost.")
        self.push_screen(ConfirmScreen("The work has not stopped", body, yes="kill it and quit",
                                       no="keep waiting"), answered)
