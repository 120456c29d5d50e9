"""Security defaults, checked.

- Models: no checkpoint code runs and no pickle loads unless the user passes
  --trust-remote-code / --allow-pickle; every command and the app pass the choice on, and
  the app shows when either is on.
- Nothing listens on a network port.
- Paths read from manifests and workspace files cannot lead reads or writes out of the
  folder they belong to.
- Notes and data are stored and shown as text: never SQL, code or markup.
"""

from __future__ import annotations

import doctest
import io
import json
import os
import socket
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from app_pilot import open_curate, settle
from rich.console import Console
from safetensors.torch import load_file
from test_fuzz import run_cli
from textual.coordinate import Coordinate
from textual.widgets import Input, Label, Select, Static
from tiny_models import save_tiny_llama

import core.io.paths
import core.scoring.run
from core.data.loading import LoadConfig
from core.export.exporter import ExportError, read_manifest, rebuild_from_manifest
from core.models.load import (
    ModelLoadError,
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
)
from core.models.trust import ModelTrust
from core.scoring.config import ScoringConfig
from core.store.annotations import AnnotationStore
from core.store.workspace import Workspace
from core.training.trainer import TrainConfig, train
from dmtui.app import DmtuiApp
from dmtui.cli import build_parser, main
from dmtui.headless.score import config_from_args
from dmtui.screens.pair_detail import PairDetailScreen
from dmtui.screens.rejections import RejectionsScreen
from dmtui.widgets.curation_pane import CurationPane
from dmtui.widgets.dataset_summary import DatasetSummary
from dmtui.widgets.examples_table import ExamplesTable
from dmtui.widgets.pairs_preview import PairsPreview
from dmtui.widgets.run_pane import RunPane
from dmtui.widgets.score_pane import ScorePane

ROWS = [{"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}",
         "score": float(i % 5)} for i in range(16)]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def shown(renderable) -> str:
    """What a Rich renderable prints, as plain text."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below `root` with its size and modification time: what a write would change."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


# ---------------------------------------------------------------------------------
# Models: remote code and pickles only when asked
# ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"))


def custom_code_model(plain: Path, folder: Path, marker: Path, config_name: str = "config.json") -> Path:
    """`plain` with an auto_map naming a class in modeling_evil.py, which leaves `marker` when it runs."""
    folder.mkdir()
    for file in plain.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    config = json.loads((folder / config_name).read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
                          "AutoModelForSequenceClassification": "modeling_evil.EvilForCausalLM"}
    (folder / config_name).write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(
        "import pathlib\nfrom transformers import LlamaForCausalLM\n\n\n"
        "class EvilForCausalLM(LlamaForCausalLM):\n"
        "    def __init__(self, config):\n"
        f"        pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "        super().__init__(config)\n")
    return folder


def test_a_hub_model_not_yet_cached_has_its_configs_checked_before_loading(tiny_model, tmp_path, monkeypatch):
    """Its configs are fetched (as transformers would) and read before anything loads it."""
    import huggingface_hub

    folder = custom_code_model(tiny_model, tmp_path / "hub-copy", tmp_path / "EXECUTED")
    fetched = []

    def fetch(repo_id, filename, revision=None, **kwargs):
        fetched.append((repo_id, filename))
        return str(folder / filename)

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fetch)
    with pytest.raises(ModelLoadError, match="someorg/custom-model: its config.json asks for Python code"):
        load_causal_lm("someorg/custom-model", device="cpu", dtype=torch.float32)
    assert ("someorg/custom-model", "config.json") in fetched


def pickle_only_model(plain: Path, folder: Path) -> Path:
    """`plain` with its weights as pytorch_model.bin (a pickle) and no safetensors."""
    folder.mkdir()
    for file in plain.iterdir():
        if file.suffix != ".safetensors":
            (folder / file.name).write_bytes(file.read_bytes())
    torch.save(load_file(plain / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


def test_a_model_that_ships_code_is_refused_without_the_flag(tiny_model, tmp_path):
    marker = tmp_path / "EXECUTED"
    folder = custom_code_model(tiny_model, tmp_path / "custom", marker)
    loaders = (lambda **k: load_causal_lm(folder, device="cpu", dtype=torch.float32, **k),
               lambda **k: load_reward_model(folder, device="cpu", dtype=torch.float32, **k),
               lambda **k: load_tokenizer(folder, **k))
    for load in loaders:
        with pytest.raises(ModelLoadError) as refused:
            load()
        assert "modeling_evil.py" in refused.value.message and "--trust-remote-code" in refused.value.hint
    assert not marker.exists()
    # A tokenizer config asking for code is refused as well.
    tokenizer_code = custom_code_model(tiny_model, tmp_path / "tokenizer-code", marker, "tokenizer_config.json")
    with pytest.raises(ModelLoadError, match="tokenizer_config.json asks for Python code"):
        load_tokenizer(tokenizer_code)
    # The refusal is the flag's doing: with it, the code runs.
    load_causal_lm(folder, device="cpu", dtype=torch.float32, trust_remote_code=True)
    assert marker.exists()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """A small dataset and an export of it, made through the CLI."""
    root = tmp_path_factory.mktemp("exported")
    data = write_jsonl(root / "data.jsonl", ROWS)
    code, _, err = run_cli(main, ["export", str(data), "--margin", "external=score", "--budget", "8",
                                  "--out", str(root / "export")])
    assert code == 0, err
    return root / "export"


@pytest.mark.parametrize("kind", ["ships code", "pickle only"])
@pytest.mark.parametrize("command", ["score", "train"])
def test_every_command_refuses_unsafe_models_without_the_flag(tiny_model, export_dir, tmp_path, kind, command):
    marker = tmp_path / "EXECUTED"
    if kind == "ships code":
        model, refusal, flag = custom_code_model(tiny_model, tmp_path / "m", marker), "asks for Python code", \
            "--trust-remote-code"
    else:
        model, refusal, flag = pickle_only_model(tiny_model, tmp_path / "m"), "refusing to load pickle weights", \
            "--allow-pickle"
    if command == "score":
        argv = ["score", str(export_dir.parent / "data.jsonl"), "--workspace", str(tmp_path / "ws"),
                "--sources", "external", "--reward-model", str(model)]
    else:
        argv = ["train", str(export_dir), "--out", str(tmp_path / "run"), "--model", str(model)]
    code, _, err = run_cli(main, argv)
    assert code == 1 and refusal in err and flag in err and "Traceback" not in err, err
    assert not marker.exists()
    assert not (tmp_path / "run").exists()  # training refuses before it makes a run folder


def test_the_flags_are_off_by_default_and_each_command_takes_them():
    assert not ScoringConfig().trust_remote_code and not ScoringConfig().allow_pickle
    assert not TrainConfig().trust_remote_code and not TrainConfig().allow_pickle
    assert ModelTrust().warning() is None and ModelTrust().flags() == []
    from dataclasses import asdict

    from dmtui.headless import score, train

    parser = build_parser()
    settings = {"score": score.config_from_args, "train": lambda args: train.config_from_args(args, asdict(TrainConfig())),
                "open": lambda args: args}  # what each command loads models with
    for argv in (["score", "d.jsonl"], ["train", "e", "--out", "r"], ["open", "d.jsonl"]):
        off = settings[argv[0]](parser.parse_args(argv))
        on = settings[argv[0]](parser.parse_args([*argv, "--trust-remote-code", "--allow-pickle"]))
        assert (off.trust_remote_code, off.allow_pickle, on.trust_remote_code, on.allow_pickle) == \
            (False, False, True, True), argv


class LoaderCalls:
    """Stands in for the model loaders: records each call's flags; tokenizers load, models stop the run."""

    class Stop(Exception):
        pass

    def __init__(self) -> None:
        self.stage = ""
        self.calls: list[tuple[str, str, dict]] = []

    def tokenizer(self, path, **options):
        self.calls.append((self.stage, "tokenizer", options))
        return load_tokenizer(path, **options)

    def model(self, path, **options):
        self.calls.append((self.stage, "model", options))
        raise self.Stop

    def flags(self, stage: str) -> set[tuple[str, str, bool]]:
        return {(what, name, value) for where, what, options in self.calls if where == stage
                for name, value in options.items() if name in ("trust_remote_code", "allow_pickle")}


@pytest.mark.parametrize("trusted", [False, True])
def test_scoring_and_training_pass_the_flags_to_every_loader(tiny_model, tmp_path, monkeypatch, trusted):
    import core.models.load

    calls = LoaderCalls()
    monkeypatch.setattr(core.scoring.run, "_loaded", OrderedDict())  # nothing kept loaded from other tests
    for module in (core.scoring.run, core.models.load):  # scoring imports the loaders; training imports them late
        monkeypatch.setattr(module, "load_tokenizer", calls.tokenizer)
        monkeypatch.setattr(module, "load_reward_model", calls.model)
        monkeypatch.setattr(module, "load_causal_lm", calls.model)
    workspace = Workspace.open_or_create(str(write_jsonl(tmp_path / "d.jsonl", ROWS[:4])), tmp_path / "ws")
    config = ScoringConfig(sources=("external",), reward_model=str(tiny_model), device="cpu",
                           trust_remote_code=trusted, allow_pickle=trusted)
    calls.stage = "scoring"
    with pytest.raises(LoaderCalls.Stop):
        core.scoring.run.score(workspace.load(), workspace, config)
    calls.stage = "training"
    with pytest.raises(LoaderCalls.Stop):
        train(TrainConfig(model=str(tiny_model), trust_remote_code=trusted, allow_pickle=trusted),
              [{"prompt": "p", "chosen": "a", "rejected": "b"}], tmp_path / "run", metrics_sink=print)
    model_flags = {("model", "trust_remote_code", trusted), ("model", "allow_pickle", trusted)}
    assert calls.flags("scoring") - {("tokenizer", "trust_remote_code", trusted)} == model_flags
    assert calls.flags("training") == model_flags | {("tokenizer", "trust_remote_code", trusted)}


@pytest.mark.parametrize("trust", [ModelTrust(), ModelTrust(trust_remote_code=True, allow_pickle=True)])
async def test_the_app_shows_and_passes_on_what_models_may_do(tmp_path, monkeypatch, trust):
    score_commands: list[list[str]] = []
    commands: list[list[str]] = []
    monkeypatch.setattr(ScorePane, "run_scoring", lambda self, command: score_commands.append(command))
    monkeypatch.setattr(RunPane, "run_training", lambda self, command: commands.append(command))
    workspace = Workspace.open_or_create(str(write_jsonl(tmp_path / "d.jsonl", ROWS)), tmp_path / "ws")
    app = DmtuiApp(workspace, model_trust=trust)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        warnings = app.screen.query("#trust-warning")
        if trust.trust_remote_code:
            text = str(warnings.first(Label).render())
            assert warnings.first().display and "remote code allowed" in text and "pickle" in text
        else:
            assert not warnings
        await pilot.press("3")
        app.screen.query_one("#score-reward_model", Input).value = str(tmp_path / "some-model")
        await pilot.click("#score-start")
        await settle(app, pilot)
        await pilot.press("2")
        app.screen.query_one("#mode", Select).value = "random"  # Train refuses while DM-MUL has no margins
        await settle(app, pilot)
        await pilot.press("4")
        run = app.screen.query_one(RunPane)
        run.last_export = str(tmp_path / "export")
        run.query_one("#train-model", Input).value = "some-model"
        await pilot.click("#train")
    assert len(score_commands) == 1 and score_commands[0][1:3] == ["-m", "dmtui"]
    # the app scores in a `dmtui score` child: what that child makes of the command it is given
    config = config_from_args(build_parser().parse_args(score_commands[0][3:]))
    assert (config.trust_remote_code, config.allow_pickle) == (trust.trust_remote_code, trust.allow_pickle)
    assert len(commands) == 1
    assert ("--trust-remote-code" in commands[0], "--allow-pickle" in commands[0]) == \
        (trust.trust_remote_code, trust.allow_pickle)


# ---------------------------------------------------------------------------------
# Nothing listens on a network port
# ---------------------------------------------------------------------------------

def _listening_socket_inodes() -> set[str]:
    """Inodes of this process's sockets that listen (TCP) or are bound (UDP), from /proc."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    listening = set()
    for table, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", None), ("udp6", None)):
        path = Path("/proc/self/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            parts = line.split()
            if state is None or parts[3] == state:
                listening.add(parts[9])
    return mine & listening


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
async def test_nothing_listens_on_a_network_port(tmp_path, monkeypatch):
    network_calls = []

    def watch(method):
        original = getattr(socket.socket, method)

        def watched(self, *args):
            if self.family != socket.AF_UNIX:
                network_calls.append((method, self.family, args))
            return original(self, *args)
        return watched

    for method in ("bind", "listen"):
        monkeypatch.setattr(socket.socket, method, watch(method))
    before = _listening_socket_inodes()
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    for argv in (["info", str(data)], ["select", str(data), "--margin", "external=score"],
                 ["export", str(data), "--margin", "external=score", "--out", str(tmp_path / "out")]):
        assert run_cli(main, argv)[0] == 0
    workspace = Workspace.open_or_create(str(data), tmp_path / "ws")
    app = DmtuiApp(workspace, margin_specs=["external=score"])
    async with app.run_test(size=(120, 40)) as pilot:
        await open_curate(app, pilot)
        for tab in "341":
            await pilot.press(tab)
        await settle(app, pilot)
        assert _listening_socket_inodes() - before == set()
    assert network_calls == []
    assert _listening_socket_inodes() - before == set()


# ---------------------------------------------------------------------------------
# Paths from manifests and workspaces stay inside
# ---------------------------------------------------------------------------------

def test_path_helpers():
    assert doctest.testmod(core.io.paths).failed == 0


def craft(manifest_path: Path, change) -> Path:
    """A copy of an export's folder (beside it) whose manifest `change(manifest)` edited."""
    export = manifest_path.parent
    folder = export.with_name(f"{export.name}-crafted-{len(list(export.parent.glob('*-crafted-*')))}")
    folder.mkdir()
    for file in manifest_path.parent.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    manifest = json.loads(manifest_path.read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


@pytest.fixture
def exported(tmp_path) -> Path:
    """An export whose manifest names a workspace; returns its manifest."""
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    Workspace.open_or_create(str(data), tmp_path / "ws")
    code, _, err = run_cli(main, ["export", str(data), "--workspace", str(tmp_path / "ws"),
                                  "--margin", "external=score", "--budget", "8", "--out", str(tmp_path / "export")])
    assert code == 0, err
    return tmp_path / "export" / "manifest.json"


def test_a_manifest_cannot_point_the_data_outside_its_export(exported, tmp_path):
    secret = write_jsonl(tmp_path / "secret.jsonl", ROWS[:3])
    outside = [craft(exported, lambda m: m["output"].update(data="../secret.jsonl")),
               craft(exported, lambda m: m["output"].update(data=str(secret)))]
    linked = craft(exported, lambda m: m["output"].update(data="link.jsonl"))
    (linked.parent / "link.jsonl").symlink_to(secret)
    for manifest in [*outside, linked]:
        with pytest.raises(ExportError, match="not a name inside the export folder"):
            read_manifest(manifest)
        # Training reads an export through its manifest: it refuses too.
        code, _, err = run_cli(main, ["train", str(manifest.parent), "--out", str(tmp_path / "run"),
                                      "--model", "any"])
        assert code == 1 and "not a name inside the export folder" in err, err


def test_a_rebuild_writes_nothing_but_its_output_folder(exported, tmp_path):
    data = tmp_path / "data.jsonl"
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))  # touched: same bytes
    before = files_under(tmp_path)
    rebuild_from_manifest(exported, tmp_path / "rebuilt")
    after = files_under(tmp_path)
    written = {name for name in after if before.get(name) != after[name]}
    assert written and all(name.startswith("rebuilt/") for name in written), written
    # A workspace the manifest names must be one; anything else is refused before a write.
    for elsewhere in ("../../etc", str(tmp_path / "data.jsonl")):
        crafted = craft(exported, lambda m: m.update(workspace=elsewhere))
        with pytest.raises(ExportError, match="is not a dmtui workspace"):
            rebuild_from_manifest(crafted, tmp_path / "never")
        assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("change", [
    lambda m: m["margins"]["sources"].update({"../../x": {"kind": "workspace"}}),
    lambda m: m["margins"]["sources"]["external"].update(fingerprint="../../scores"),
    lambda m: m["margins"]["sources"]["external"].update(columns="score"),
    lambda m: m["input"]["load_config"].update(evil=1),
    lambda m: m["input"]["load_config"].update(max_field_chars="many"),
    lambda m: m["annotations"].update(excluded="all"),
    lambda m: m["output"].update(format="exe"),
    lambda m: m["output"].update(include_scores="yes"),
    lambda m: m["selection"].update(params=["dm-mul"]),
    lambda m: m["selection"]["params"].update(nonsense=1),
    lambda m: m.update(workspace=7),
], ids=["source-name", "fingerprint", "columns", "load-option", "load-value", "annotations", "format",
        "include-scores", "params-type", "params-key", "workspace-type"])
def test_a_crafted_manifest_is_refused_with_a_reason(exported, tmp_path, change):
    with pytest.raises(ExportError) as refused:
        rebuild_from_manifest(craft(exported, change), tmp_path / "never")
    assert "manifest" in str(refused.value)
    assert not (tmp_path / "never").exists()


def test_a_workspace_cannot_lead_its_writes_outside(tmp_path):
    (tmp_path / "data").mkdir()
    data = write_jsonl(tmp_path / "data" / "d.jsonl", ROWS)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    workspace = Workspace.open_or_create(str(data), tmp_path / "ws")
    workspace.load()
    # A symlink planted in the cache, and a settings file that is not settings.
    (workspace.cache_dir / "0123456789abcdef").symlink_to(outside, target_is_directory=True)
    workspace.settings_path.write_text('["not", "settings"]')
    outside_before, data_before = files_under(outside), files_under(data.parent)
    reopened = Workspace.open(workspace.root)
    reopened.load_config = LoadConfig(max_field_chars=10**6 - 1)  # a new cache key: the old entries go
    reopened.load()
    assert reopened.read_settings() == {}
    reopened.write_settings({"curation": {"budget": "5"}})
    with AnnotationStore(reopened.annotations_path) as store:
        store.update(reopened.load().pairs["pair_id"][0].as_py(), note="x")
    assert files_under(outside) == outside_before and files_under(data.parent) == data_before


# ---------------------------------------------------------------------------------
# Notes and data are text: never SQL, code or markup
# ---------------------------------------------------------------------------------

HOSTILE = ["'); DROP TABLE annotation; --", "__import__('os').system('touch pwned')", "[bold red]x[/]",
           "[@click=app.quit]quit[/]", "[/]", "{{7*7}} ${HOME} %s \\x00 \u202e"]


def test_notes_round_trip_as_text(tmp_path):
    path = tmp_path / "annotations.sqlite"
    with AnnotationStore(path) as store:
        for number, note in enumerate(HOSTILE):
            store.update(f"pair{number}", note=note, flags=("other",))
    with AnnotationStore(path) as store:
        assert [store.get(f"pair{n}").note for n in range(len(HOSTILE))] == HOSTILE
        assert len(store.all()) == len(HOSTILE)  # the table is still there
        assert store.undo().note == ""  # the last change undone: its note as before it
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


def test_the_command_line_prints_names_from_the_data_literally(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # no line wrapped inside a long temporary path
    rows = [{**row, "[/]": row["score"], "[b]kept[/b]": 1} for row in ROWS]
    data = write_jsonl(tmp_path / "d[red].jsonl", rows)
    for argv, shown_text in ((["info", str(data)], ["d[red].jsonl", "[b]kept[/b]"]),
                             (["select", str(data), "--margin", "external=[/]"], ["column [/]"]),
                             (["info", str(tmp_path / "[/]missing.jsonl")], ["[/]missing.jsonl"])):
        code, out, err = run_cli(main, argv)
        assert "Traceback" not in err and all(text in out + err for text in shown_text), (argv, out, err)


MARKUP_ROWS = [{"[/]prompt": f"[bold red]question {i}[/] [/]", "chosen": f"[@click=app.quit]yes {i}[/]",
                "rejected": f"no {i} [/]", "m": float(i), "[b]kept[/b]": 1} for i in range(6)]


async def test_user_text_is_shown_literally_never_as_markup(tmp_path):
    rows = [*MARKUP_ROWS, {"prompt": "no [/]prompt column here", "chosen": "a", "rejected": "b", "m": 0.0}]
    data = write_jsonl(tmp_path / "d[red].jsonl", rows)  # a file name is data too
    workspace = Workspace.open_or_create(str(data), tmp_path / "ws", LoadConfig(prompt_col="[/]prompt"))
    note = "[@click=app.quit]see[/] [bold]this[/] [/]"
    first = workspace.load().pairs["pair_id"][0].as_py()
    with AnnotationStore(workspace.annotations_path) as store:
        store.update(first, note=note)
    app = DmtuiApp(workspace, margin_specs=["external=m"])
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(app, pilot)
        preview = app.screen.query_one(PairsPreview)
        assert preview.get_cell_at(Coordinate(0, 2)).plain == "[bold red]question 0[/] [/]"
        summary = shown(app.screen.query_one(DatasetSummary).content)
        assert "[/]prompt" in summary and "[b]kept[/b]" in summary
        await pilot.press("b")
        assert isinstance(app.screen, RejectionsScreen)
        rejected = app.screen.query_one(ExamplesTable)
        cells = [column.cell(int(rejected.rows[0])) for column in rejected.columns]
        assert cells[1:3] == ["[/]prompt", "missing_column"] and "'[/]prompt'" in cells[3]
        assert "[/]prompt" in "".join(segment.text for segment in rejected.render_line(1))
        assert "d[red].jsonl" in str(app.screen.query_one("#title", Static).render())
        await pilot.press("escape")

        pane = await open_curate(app, pilot)
        assert isinstance(pane, CurationPane)
        table = pane.query_one(ExamplesTable)
        lines = "".join(segment.text for y in range(1, 4) for segment in table.render_line(y))
        assert "[bold red]question" in lines
        pane.query_one("#search", Input).value = "[/]"  # the table's title quotes the search
        await settle(app, pilot)
        assert "[/]" in str(table.border_title) and app.is_running

        table.focus()
        pane.query_one("#search", Input).value = ""
        await settle(app, pilot)
        table.cursor = int(np.flatnonzero(table.rows == 0)[0])
        await pilot.press("enter")
        assert isinstance(app.screen, PairDetailScreen)
        header = str(app.screen.query_one("#pair-header", Static).render())
        assert note in header
        assert str(app.screen.query_one("#prompt", Static).render()) == "[bold red]question 0[/] [/]"
        assert "[@click=app.quit]yes 0[/]" in str(app.screen.query_one("#chosen", Static).render())
        prefix = "flag: —   excluded: no   swapped: no   note: "
        await pilot.click("#pair-header", offset=(len(prefix) + 2, 1))  # on the note: it names an action
        assert app.is_running
