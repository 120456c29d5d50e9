"""The start screen of `dmtui` without a dataset: recent workspaces, a path to open (with
completion), a browser of the folder it started in, and the demo. Enter opens the choice.

A dataset gets its workspace next to it (data.jsonl -> data.dmtui), as `dmtui open DATA` does; a
workspace folder opens as it is.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, DirectoryTree, Footer, Header, Input, Label

from core.data.sources import EXTENSION_KINDS
from core.store.recent import RecentWorkspace, recent_workspaces
from dmtui.widgets.path_input import PathInput

COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


def is_dataset_file(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in EXTENSION_KINDS


def is_dataset_folder(path: Path) -> bool:
    """A workspace, or a `datasets.save_to_disk` folder: folders that open rather than expand."""
    from core.store.workspace import is_workspace

    return is_workspace(path) or (path / "dataset_dict.json").exists() or (path / "state.json").exists()


def ago(seconds: float) -> str:
    if seconds < 60:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return ""


class DataTree(DirectoryTree):
    """Folders and the files dmtui reads; hidden entries left out."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and (p.is_dir() or is_dataset_file(p))]


class LauncherScreen(Screen):
    CSS_PATH = Path(__file__).with_name("launcher.tcss")
    BINDINGS = [
        Binding("d", "open_demo", "Open the demo"),
        Binding("p", "type_path", "Type a path"),
        Binding("escape", "leave_field", "Leave field", show=False),
    ]

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder.resolve()
        self.recent: list[RecentWorkspace] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="launcher"):
            yield Label(Text.assemble(("Open a dataset or a workspace\n", "bold"),
                                      "Enter opens · Tab moves · p types a path · d opens the demo · q quits"),
                        id="launcher-help")
            yield Label("Recent workspaces", id="recent-title", classes="launcher-title")
            yield DataTable(id="recent", cursor_type="row")
            yield Label("Dataset or workspace path (Tab completes)", classes="launcher-title")
            with Horizontal(id="path-row"):
                yield PathInput(placeholder="a .jsonl/.json/.parquet/.csv file, or a folder", id="path")
                yield Button("Open", id="open-path", compact=True, variant="primary")
                yield Button("Open the demo (d)", id="open-demo", compact=True)
            yield Label("", id="launcher-error")
            yield Label(Text(f"Browse {self.folder}"), classes="launcher-title")
            yield DataTree(self.folder, id="browser")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#recent", DataTable)
        table.add_columns("dataset", "pairs", "scores", "last opened", "workspace")
        self.recent = recent_workspaces()
        now = time.time()
        for index, entry in enumerate(self.recent):
            pairs = f"{entry.pairs:,}" if entry.pairs is not None else "?"
            table.add_row(Text(Path(entry.dataset).name or "-", style="dim" if entry.problem else ""), pairs,
                          ", ".join(entry.scores) or "none", ago(now - entry.opened),
                          Text(str(entry.root) + (f"  ({entry.problem})" if entry.problem else "")), key=str(index))
        if self.recent:
            table.focus()
        else:  # the browser rather than the path field, where d and q would be typed
            table.display = False
            self.query_one("#recent-title", Label).update("Recent workspaces: none yet")
            self.query_one("#browser", DataTree).focus()

    # Choosing ------------------------------------------------------------------
    @on(DataTable.RowSelected, "#recent")
    def _recent_chosen(self, event: DataTable.RowSelected) -> None:
        entry = self.recent[int(event.row_key.value)]
        if entry.problem:
            self.show_error(f"{entry.root}: {entry.problem}")
            return
        self.open_path(str(entry.root))

    @on(Input.Submitted, "#path")
    @on(Button.Pressed, "#open-path")
    def _path_chosen(self) -> None:
        text = self.query_one("#path", Input).value.strip()
        if not text:
            self.show_error("Type a path, or pick one below")
            return
        self.open_path(str(Path(text).expanduser()))

    @on(DirectoryTree.FileSelected)
    def _file_chosen(self, event: DirectoryTree.FileSelected) -> None:
        self.open_path(str(event.path))

    @on(DirectoryTree.DirectorySelected)
    def _folder_chosen(self, event: DirectoryTree.DirectorySelected) -> None:
        if is_dataset_folder(event.path):
            self.open_path(str(event.path))
        else:
            self.query_one("#path", Input).value = str(event.path) + "/"

    @on(Button.Pressed, "#open-demo")
    def action_open_demo(self) -> None:
        self.open_path(None, demo=True)

    def action_type_path(self) -> None:
        self.set_focus(self.query_one("#path", Input))

    def action_leave_field(self) -> None:
        self.set_focus(self.query_one("#browser"))

    def show_error(self, text: str) -> None:
        self.query_one("#launcher-error", Label).update(Text(text, style="bold red"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="open")
    def open_path(self, path: str | None, demo: bool = False) -> None:
        """Open or create the workspace off the UI thread (creating one checksums the dataset).
        `path` None with `demo`: the demo world's dataset, wherever this copy of dmtui keeps it.
        The demo's models are filled in for the demo, and for any choice under `dmtui open --demo-models`."""
        from core.demo.sample_data import demo_dataset
        from core.errors import DmtuiError
        from core.store.workspace import Workspace, is_workspace

        try:
            path = path or str(demo_dataset())
            self.app.call_from_thread(self.query_one("#launcher-error", Label).update, Text(f"Opening {path}…"))
            workspace = Workspace.open(path) if is_workspace(path) else Workspace.open_or_create(path)
        except DmtuiError as error:
            self.app.call_from_thread(self.show_error, error.message + (f"\n{error.hint}" if error.hint else ""))
            return
        self.app.call_from_thread(self.app.open_workspace, workspace, demo or self.app.build_demo_models)
