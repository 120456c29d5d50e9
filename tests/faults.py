"""Fault trials: run a real command, SIGKILL it at a random moment, run it again (resuming
where the command can) until it finishes, and check after every kill and at the end that
nothing finished was lost and nothing is left half-written.

Used by tests/test_faults.py (a few trials in CI, 20 per kind with ``-m slow``) and by
bench/fault_trials.py, which prints the README's Reliability table. Five kinds:

- scoring: ``dmtui score`` of 20 pairs with a checkpoint every 2. After a kill every pair_id that
  was in a score part is still there with the same margin; the workspace opens; the final
  tables equal an uninterrupted run's.
- score checkpoints: `ScoreStore.append` of large parts in a loop (this file run as a
  worker that prints each part's number once appended), so that most kills land inside a
  write, which in ``dmtui score`` takes a millisecond of every few seconds. After a kill every
  printed part is there, at most the one in flight beyond them, and each holds exactly what
  was appended.
- export: ``dmtui export --force`` over an older export. After a kill the output folder is
  the older export or the new one, whole (the manifest's checksum verifies), or absent only
  in the instant between the two renames of a replace (the next run puts the older one
  back); the final export equals an uninterrupted run's byte for byte.
- annotations: this file run as a worker that makes many `AnnotationStore.update` calls and
  prints each one's number once it returned. After a kill every printed update is in the
  database, at most the one in flight beyond them, the state is exactly the state after
  that many updates, and ``PRAGMA integrity_check`` passes.
- training: ``dmtui train`` saving a checkpoint every step, rerun with ``--resume``. The
  final weights and every metric equal an uninterrupted run's (to 1e-6; they come out
  identical: transformers restores the data order and RNG state from the checkpoint).

Kill times are drawn (seeded) uniformly over the span in which an uninterrupted reference
run writes, from its first change to the files to its last (and a tenth more), counted from
each attempt's own first change (so that time spent importing libraries, which varies with
the machine's load, does not shift the kills).

What a kill may leave, and what counts as lost or damaged:
- hidden temp entries (``.NAME.<host>-<pid>-XXXX.tmp`` of the atomic writes,
  ``.OUT.tmp-<host>-<pid>-XXXX`` of an export, ``.final-partial`` of training) are what a
  write in flight leaves. No reader looks at them and the next write of the same target
  removes them; they are counted as "kills mid-write", not as damage.
- every other file must read whole: JSON, JSON lines, Parquet, Arrow, SQLite, safetensors.
- transformers writes checkpoints in place, so a save cut short leaves a checkpoint folder
  without a readable trainer_state.json (written last). It may only be the newest one;
  dmtui never resumes from it and removes it on resume. Counted as mid-write too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_PAIRS = REPO_ROOT / "sample_data" / "demo" / "pairs.jsonl"
ATTEMPT_LIMIT_S = 300
TOLERANCE = 1e-6

# Entries a write in flight leaves (see the module docstring).
TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}-\d+-[^/]*\.tmp$|^\..+\.(tmp|old)-[0-9a-f]{8}-\d+|^\.final-partial$")


LOGS = "logs"
"""Where a trial keeps each attempt's stdout and stderr, inside its folder (never checked)."""


@dataclass
class Trial:
    kind: str
    seed: int
    kills: int = 0
    """Kills that landed before the process ended."""
    mid_write: int = 0
    """Kills after which a temp entry or an unfinished checkpoint was left: the kill hit a write."""
    lost: list[str] = field(default_factory=list)
    """Everything found lost, damaged or different from the uninterrupted run (must stay empty)."""


# --- checking files ------------------------------------------------------------------------


def unreadable(path: Path) -> str | None:
    """Why `path` is not a whole file of its kind, or None. Kinds without a check pass."""
    name = path.name
    try:
        if name.endswith(".jsonl"):
            text = path.read_text("utf-8")
            if text and not text.endswith("\n"):
                return f"{path}: last line cut short"
            for line in text.splitlines():
                json.loads(line)
        elif name.endswith(".json"):
            json.loads(path.read_text("utf-8"))
        elif name.endswith(".parquet"):
            import pyarrow.parquet as pq

            pq.read_table(path)
        elif name.endswith(".arrow"):
            import pyarrow as pa
            import pyarrow.ipc  # noqa: F401 - pa.ipc

            with pa.memory_map(str(path)) as source:
                try:
                    pa.ipc.open_file(source).read_all()
                except pa.ArrowInvalid:  # datasets writes the stream format
                    source.seek(0)
                    pa.ipc.open_stream(source).read_all()
        elif name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(path), "np") as tensors:
                for key in tensors.keys():
                    tensors.get_tensor(key)
        elif name.endswith(".sqlite"):
            connection = sqlite3.connect(path)
            try:
                verdict = connection.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                connection.close()
            if verdict != "ok":
                return f"{path}: integrity_check says {verdict}"
    except Exception as error:  # noqa: BLE001 - any failure to read is the finding
        return f"{path}: {type(error).__name__}: {error}"
    return None


def check_tree(root: Path, skip: set[Path] = frozenset()) -> tuple[list[str], int]:
    """(damaged files, temp entries) under `root`; folders in `skip` are not looked into."""
    damaged, temps = [], 0
    if not root.exists():
        return damaged, temps
    for folder, folders, files in os.walk(root):
        here = Path(folder)
        for name in list(folders):
            if here / name in skip or name == LOGS:
                folders.remove(name)
            elif name.startswith("."):
                folders.remove(name)
                if TEMP_NAME.match(name):
                    temps += 1
                else:
                    damaged.append(f"{here / name}: unexpected hidden folder")
        for name in files:
            if name.startswith("."):
                if TEMP_NAME.match(name):
                    temps += 1
                else:
                    damaged.append(f"{here / name}: unexpected hidden file")
            elif problem := unreadable(here / name):
                damaged.append(problem)
    return damaged, temps


# --- running and killing ------------------------------------------------------------------


def start(argv: list[str], folder: Path, attempt: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    (folder / LOGS).mkdir(exist_ok=True)
    with (folder / LOGS / f"stdout-{attempt}.txt").open("w") as out, \
            (folder / LOGS / f"stderr-{attempt}.txt").open("w") as err:
        return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, start_new_session=True, stdout=out, stderr=err)


def stderr_of(folder: Path, attempt: int) -> str:
    return (folder / LOGS / f"stderr-{attempt}.txt").read_text()[-2000:]


def tree_state(root: Path) -> frozenset[tuple[str, int, int]]:
    """Every entry under `root` with its size and modification time: what a write changes."""
    entries = set()
    for folder, folders, files in os.walk(root):
        if LOGS in folders:
            folders.remove(LOGS)
        for name in folders + files:
            try:
                stat = os.stat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            entries.add((os.path.join(folder, name), stat.st_size, stat.st_mtime_ns))
    return frozenset(entries)


def wait_for_first_write(process: subprocess.Popen, root: Path, before: frozenset, began: float) -> float | None:
    """Seconds from `began` until the files under `root` first change; None if the process
    ended first."""
    while process.poll() is None:
        if tree_state(root) != before:
            return time.monotonic() - began
        if time.monotonic() - began > ATTEMPT_LIMIT_S:
            kill(process)
            raise RuntimeError(f"{process.args} wrote nothing in {ATTEMPT_LIMIT_S} s")
        time.sleep(0.005)
    return None


def kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


def dmtui(*args: str) -> list[str]:
    return [sys.executable, "-m", "dmtui", *map(str, args)]


class Scenario:
    """One kind of trial: what to run, when it has started writing, what to check."""

    kind = ""

    def __init__(self, work: Path) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.span_s: float | None = None
        """How long the reference run went on after its first write."""

    def prepare(self, folder: Path) -> None:
        """Set up a fresh trial folder (and forget the last trial's observations)."""

    def argv(self, folder: Path, attempt: int) -> list[str]:
        raise NotImplementedError

    def watched(self, folder: Path) -> Path:
        """The tree whose first change marks the start of an attempt's work."""
        return folder

    def after_kill(self, folder: Path, trial: Trial) -> None:
        raise NotImplementedError

    def after_finish(self, folder: Path, trial: Trial) -> None:
        raise NotImplementedError

    def remember_reference(self, folder: Path) -> None:
        """Keep what the uninterrupted run produced, for comparing trials with."""

    def measure(self, runs: int = 1) -> float:
        """Run without a kill: the results trials are compared with, and the span kill times
        are drawn from: first write to last write, and a tenth more (the exit after the last
        write can take seconds, torch's teardown), the shortest of `runs` runs (the first run
        of a command is often slowed by a cold file cache)."""
        spans = []
        for _ in range(runs):
            folder = self.work / "reference"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            self.prepare(folder)
            watched = self.watched(folder)
            state = tree_state(watched)
            began = time.monotonic()
            process = start(self.argv(folder, 0), folder, 0)
            first_write = wait_for_first_write(process, watched, state, began)
            last_write = first_write
            while process.poll() is None or tree_state(watched) != state:
                if (now := tree_state(watched)) != state:
                    state, last_write = now, time.monotonic() - began
                time.sleep(0.005)
            if process.wait(timeout=ATTEMPT_LIMIT_S) != 0 or first_write is None:
                raise RuntimeError(f"{self.kind}: the reference run failed or wrote nothing:\n{stderr_of(folder, 0)}")
            spans.append(1.1 * (last_write - first_write))
        self.remember_reference(folder)
        self.span_s = min(spans)
        return self.span_s


def run_trial(scenario: Scenario, seed: int, kills: int, folder: Path | None = None, window: float = 1.0) -> Trial:
    """Kill `scenario`'s command up to `kills` times at seeded random moments, rerun it after
    each kill, let the last run finish, and check everything. `scenario.measure()` first.

    Kills fall within the first `window` of the measured run time: below 1 a kill lands
    even when a run goes faster than the one measured."""
    assert scenario.span_s is not None, "measure the scenario first"
    # An integer seed: string seeds that differ only at the end gave correlated first draws.
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{scenario.kind}-{seed}".encode()).digest()[:8], "big"))
    folder = folder or scenario.work / f"trial-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    scenario.prepare(folder)
    trial = Trial(scenario.kind, seed)
    for attempt in range(2 * kills + 2):
        delay = rng.uniform(0, window * scenario.span_s) if trial.kills < kills else None
        before = tree_state(scenario.watched(folder))
        began = time.monotonic()
        process = start(scenario.argv(folder, attempt), folder, attempt)
        if delay is not None and wait_for_first_write(process, scenario.watched(folder), before, began) is not None:
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                kill(process)
        process.wait(timeout=ATTEMPT_LIMIT_S)
        if process.returncode == -signal.SIGKILL:
            trial.kills += 1
            scenario.after_kill(folder, trial)
        elif process.returncode == 0:
            scenario.after_finish(folder, trial)
            return trial
        else:
            trial.lost.append(f"attempt {attempt} exited with {process.returncode}: {stderr_of(folder, attempt)}")
            return trial
    trial.lost.append(f"no attempt finished after {trial.kills} kills")
    return trial


# --- scoring -------------------------------------------------------------------------------


def demo_rows(n: int) -> list[str]:
    """The first `n` good rows of the demo dataset, as JSON lines."""
    return [line for line in DEMO_PAIRS.read_text("utf-8").splitlines() if line.startswith('{"id"')][:n]


def read_scores(workspace: Path) -> dict[str, dict[str, float]]:
    """Every score table's margins by pair_id, per source."""
    from core.store.scores import ScoreStore, list_score_tables

    scores = {}
    for info in list_score_tables(workspace / "scores"):
        table = ScoreStore(workspace / "scores", info.source, info.fingerprint).read()
        scores[info.source] = dict(zip(table["pair_id"].to_pylist(), table["margin"].to_pylist()))
    return scores


def same_number(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= TOLERANCE


class ScoringScenario(Scenario):
    kind = "scoring"

    def __init__(self, work: Path, models: Any, pairs: int = 20, checkpoint_every: int = 2) -> None:
        super().__init__(work)
        self.data = work / "pairs.jsonl"
        self.data.write_text("\n".join(demo_rows(pairs)) + "\n", "utf-8")
        self.options = ["--sources", "external,implicit", "--reward-model", models.reward,
                        "--reference-model", models.policy, "--policy-model", models.policy,
                        "--device", "cpu", "--checkpoint-every", checkpoint_every, "--json"]
        self.reference: dict[str, dict[str, float]] = {}
        self.seen: dict[str, dict[str, float]] = {}

    def argv(self, folder: Path, attempt: int) -> list[str]:
        return dmtui("score", self.data, "--workspace", folder / "ws", *self.options)

    def watched(self, folder: Path) -> Path:
        return folder / "ws"

    def prepare(self, folder: Path) -> None:
        self.seen = {}

    def remember_reference(self, folder: Path) -> None:
        self.reference = read_scores(folder / "ws")

    def after_kill(self, folder: Path, trial: Trial) -> None:
        from core.store.workspace import WORKSPACE_FILE, Workspace

        workspace = folder / "ws"
        damaged, temps = check_tree(workspace)
        trial.lost += damaged
        trial.mid_write += temps > 0
        if (workspace / WORKSPACE_FILE).exists():
            try:
                Workspace.open(workspace)
            except Exception as error:  # noqa: BLE001
                trial.lost.append(f"the workspace does not open: {error}")
        elif workspace.exists() and any(not p.name.startswith(".") for p in workspace.iterdir()):
            trial.lost.append(f"{workspace} holds files but no {WORKSPACE_FILE}: `dmtui score` would refuse it")
        scores = read_scores(workspace) if workspace.exists() else {}
        for source, before in self.seen.items():
            now = scores.get(source, {})
            gone = [pid for pid, margin in before.items() if pid not in now or not same_number(now[pid], margin)]
            if gone:
                trial.lost.append(f"{source}: {len(gone)} scores stored before the kill are gone or changed")
        self.compare(scores, trial, complete=False)
        self.seen = scores

    def after_finish(self, folder: Path, trial: Trial) -> None:
        damaged, temps = check_tree(folder / "ws")
        trial.lost += damaged
        if temps:
            trial.lost.append(f"{temps} temp files left in the workspace after the run finished")
        self.compare(read_scores(folder / "ws"), trial, complete=True)

    def compare(self, scores: dict[str, dict[str, float]], trial: Trial, complete: bool) -> None:
        for source, reference in self.reference.items():
            got = scores.get(source, {})
            if complete and set(got) != set(reference):
                trial.lost.append(f"{source}: {len(set(reference) - set(got))} pairs missing at the end")
            differ = [pid for pid, margin in got.items() if not same_number(margin, reference[pid])]
            if differ:
                trial.lost.append(f"{source}: {len(differ)} margins differ from the uninterrupted run")


def part_table(index: int, rows: int) -> Any:
    """The `index`-th checkpoint the store worker appends (its values follow from `index`)."""
    import pyarrow as pa

    ids = [f"{index:04d}-{row:05d}" for row in range(rows)]
    return pa.table({"pair_id": ids, "margin": np.arange(rows, dtype=np.float64) + index / 1000})


def append_parts(folder: Path, total: int, rows: int) -> None:
    """The store worker: append parts to a score table until it holds `total`; print each
    part's number once `append` has returned."""
    from core.store.scores import ScoreStore

    store = ScoreStore(folder, "external", "trial")
    for index in range(len(store.parts()), total):
        store.append(part_table(index, rows))
        print(index, flush=True)


def acknowledged(folder: Path) -> int:
    """How many items a worker has printed (numbers 0, 1, ...), over all its attempts."""
    numbers = [int(line) for out in (folder / LOGS).glob("stdout-*.txt") for line in out.read_text().split()]
    return max(numbers) + 1 if numbers else 0


class ScoreStoreScenario(Scenario):
    """`ScoreStore.append` in a loop, as scoring checkpoints, with parts large enough that most
    kills land inside a write (the CLI scenario spends most of its time computing)."""

    kind = "score checkpoints"

    def __init__(self, work: Path, parts: int = 40, rows: int = 20_000) -> None:
        super().__init__(work)
        self.parts, self.rows = parts, rows

    def argv(self, folder: Path, attempt: int) -> list[str]:
        return [sys.executable, str(Path(__file__)), "append", str(folder / "scores"), str(self.parts), str(self.rows)]

    def watched(self, folder: Path) -> Path:
        return folder / "scores"

    def after_kill(self, folder: Path, trial: Trial) -> None:
        damaged, temps = check_tree(folder / "scores")
        trial.lost += damaged
        trial.mid_write += temps > 0
        self.compare(folder, acknowledged(folder), trial)

    def after_finish(self, folder: Path, trial: Trial) -> None:
        damaged, temps = check_tree(folder / "scores")
        trial.lost += damaged
        if temps:
            trial.lost.append(f"{temps} temp files left after the last append")
        self.compare(folder, self.parts, trial)

    def compare(self, folder: Path, acknowledged: int, trial: Trial) -> None:
        import pyarrow.parquet as pq

        from core.store.scores import ScoreStore

        parts = ScoreStore(folder / "scores", "external", "trial").parts()
        if not acknowledged <= len(parts) <= acknowledged + 1:
            trial.lost.append(f"{len(parts)} parts stored, {acknowledged} acknowledged")
        for index, part in enumerate(parts):
            if not pq.read_table(part).equals(part_table(index, self.rows)):
                trial.lost.append(f"{part.name} holds other values than were appended")


# --- export --------------------------------------------------------------------------------


def margin_rows(n: int, seed: int = 7) -> list[str]:
    """`n` pairs with margin columns, so that exports need no model."""
    rng = np.random.default_rng(seed)
    return [json.dumps({"prompt": f"question {i}: " + "how? " * (i % 13), "chosen": f"a good answer {i} " * 4,
                        "rejected": f"a bad answer {i}", "score_chosen": int(rng.integers(1, 10)),
                        "score_rejected": int(rng.integers(1, 10)), "implicit_m": float(rng.normal(0, 3))})
            for i in range(n)]


def verify_export(out: Path) -> tuple[str | None, str | None]:
    """(the manifest's output checksum, None) for a whole export, else (None, what is wrong)."""
    from core.export.exporter import MANIFEST_NAME, _tree_checksum

    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text("utf-8"))
        data = out / manifest["output"]["data"]
        if _tree_checksum(data) != manifest["output"]["sha256"]:
            return None, f"{data} does not match the checksum in its manifest"
        if problem := unreadable(data):
            return None, problem
        lines = data.read_text("utf-8").splitlines()
        if len(lines) != manifest["counts"]["selected"]:
            return None, f"{data}: {len(lines)} rows, the manifest records {manifest['counts']['selected']}"
        return manifest["output"]["sha256"], None
    except (OSError, ValueError, KeyError) as error:
        return None, f"{out}: {type(error).__name__}: {error}"


class ExportScenario(Scenario):
    """`dmtui export --force` replacing an older export of the same data."""

    kind = "export"

    def __init__(self, work: Path, pairs: int = 20_000) -> None:
        super().__init__(work)
        self.data = work / "pairs.jsonl"
        self.data.write_text("\n".join(margin_rows(pairs)) + "\n", "utf-8")
        self.older = work / "older"
        shutil.rmtree(self.older, ignore_errors=True)
        subprocess.run(self.export_argv(self.older, "5%"), cwd=REPO_ROOT, check=True, capture_output=True)
        self.older_sha, problem = verify_export(self.older)
        assert problem is None, problem
        self.reference_sha: str | None = None

    def export_argv(self, out: Path, budget: str) -> list[str]:
        return dmtui("export", self.data, "--margin", "external=score_chosen,score_rejected",
                     "--margin", "implicit=implicit_m", "--budget", budget, "--out", out, "--force", "--json")

    def argv(self, folder: Path, attempt: int) -> list[str]:
        return self.export_argv(folder / "out", "50%")

    def prepare(self, folder: Path) -> None:
        shutil.copytree(self.older, folder / "out")

    def remember_reference(self, folder: Path) -> None:
        self.reference_sha, problem = verify_export(folder / "out")
        assert problem is None, problem

    def after_kill(self, folder: Path, trial: Trial) -> None:
        out = folder / "out"
        damaged, temps = check_tree(folder)
        trial.lost += damaged
        trial.mid_write += temps > 0
        if not out.exists():
            if not any(p.name.startswith(".out.old-") for p in folder.iterdir()):
                trial.lost.append("the output folder is gone and the older export is nowhere")
            return  # killed between the two renames: the next run puts the older export back
        sha, problem = verify_export(out)
        if problem:
            trial.lost.append(problem)
        elif sha not in (self.older_sha, self.reference_sha):
            trial.lost.append(f"{out} holds an export that is neither the older one nor the new one")

    def after_finish(self, folder: Path, trial: Trial) -> None:
        damaged, temps = check_tree(folder)
        trial.lost += damaged
        if temps:
            trial.lost.append(f"{temps} temp entries left beside the export after it finished")
        sha, problem = verify_export(folder / "out")
        if problem or sha != self.reference_sha:
            trial.lost.append(problem or "the final export differs from the uninterrupted run's")


# --- annotations ---------------------------------------------------------------------------


def annotation_change(i: int) -> tuple[str, dict[str, Any]]:
    """The i-th update of the worker: a pair and the fields it changes (always a real change)."""
    from core.store.annotations import FLAGS

    changes: dict[str, Any] = {"note": f"note {i}"}
    kind = i % 4
    if kind == 0:
        changes["flags"] = (FLAGS[(i // 4) % len(FLAGS)],)
    elif kind == 1:
        changes["excluded"] = (i // 4) % 2 == 0
    elif kind == 2:
        changes["swapped"] = (i // 4) % 2 == 0
    return f"pair-{i % 37:02d}", changes


def annotations_after(count: int) -> dict[str, Any]:
    """The annotations the first `count` updates make, computed without a database."""
    from dataclasses import replace

    from core.store.annotations import Annotation

    state: dict[str, Annotation] = {}
    for i in range(count):
        pair_id, changes = annotation_change(i)
        state[pair_id] = replace(state.get(pair_id, Annotation(pair_id)), **changes)
    return {pair_id: a for pair_id, a in state.items() if not a.is_blank}


def committed_updates(db: Path) -> int:
    connection = sqlite3.connect(db)
    try:
        return connection.execute("SELECT COUNT(*) FROM history").fetchone()[0]
    finally:
        connection.close()


def annotate(db: Path, total: int) -> None:
    """The worker: continue the sequence of updates where the database stands; print each
    update's number once `update` has returned (the store promises it is durable then)."""
    from core.store.annotations import AnnotationStore

    done = committed_updates(db) if db.exists() else 0
    with AnnotationStore(db) as store:
        for i in range(done, total):
            pair_id, changes = annotation_change(i)
            store.update(pair_id, **changes)
            print(i, flush=True)


class AnnotationScenario(Scenario):
    kind = "annotations"

    def __init__(self, work: Path, updates: int = 400) -> None:
        super().__init__(work)
        self.updates = updates

    def argv(self, folder: Path, attempt: int) -> list[str]:
        return [sys.executable, str(Path(__file__)), "annotate", str(folder / "annotations.sqlite"),
                str(self.updates)]

    def after_kill(self, folder: Path, trial: Trial) -> None:
        db = folder / "annotations.sqlite"
        damaged, _ = check_tree(folder)
        trial.lost += damaged
        if not db.exists():
            return
        acknowledged_updates, committed = acknowledged(folder), committed_updates(db)
        if committed < acknowledged_updates:
            trial.lost.append(f"{acknowledged_updates - committed} acknowledged updates are not in the database")
        if committed > acknowledged_updates + 1:
            trial.lost.append(f"{committed - acknowledged_updates} updates committed but never acknowledged")
        trial.mid_write += committed == acknowledged_updates + 1  # killed during the commit, before the print
        self.compare(db, committed, trial)

    def after_finish(self, folder: Path, trial: Trial) -> None:
        db = folder / "annotations.sqlite"
        trial.lost += check_tree(folder)[0]
        if committed_updates(db) != self.updates:
            trial.lost.append(f"{committed_updates(db)} updates in the database, not {self.updates}")
        self.compare(db, self.updates, trial)

    def compare(self, db: Path, count: int, trial: Trial) -> None:
        from core.store.annotations import AnnotationStore

        with AnnotationStore(db) as store:
            if store.all() != annotations_after(count):
                trial.lost.append(f"the annotations differ from the state after {count} updates")


# --- training ------------------------------------------------------------------------------


def tiny_export(folder: Path, pairs: int = 10) -> Path:
    """An export of `pairs` demo pairs (top by a margin column) to train on."""
    from core.data.loading import LoadConfig, load_dataset
    from core.export.exporter import Annotated, export_selection, run_selection
    from core.selection.selector import SelectionParams
    from core.store.margin_sources import MarginSpec, resolve_margins
    from core.store.workspace import dataset_ref

    source = folder / "train-pairs.jsonl"
    rows = [json.loads(line) for line in demo_rows(3 * pairs)]
    source.write_text("".join(json.dumps({**row, "m": float(i % 7)}) + "\n" for i, row in enumerate(rows)))
    dataset = load_dataset(str(source))
    resolved = resolve_margins(dataset, [MarginSpec.parse("external=m")])
    selection = run_selection(dataset, resolved, SelectionParams(budget=pairs, mode="top", source="external"),
                              Annotated())
    out = folder / "train-export"
    shutil.rmtree(out, ignore_errors=True)
    export_selection(dataset, dataset_ref(str(source)), LoadConfig(), resolved, selection, Annotated(), out)
    return out


def checkpoint_steps(run: Path) -> tuple[list[int], list[Path]]:
    """(steps of the whole checkpoints, folders of the unfinished ones) of a run folder."""
    from core.training.trainer import _checkpoint_folders, _saved_step

    whole, unfinished = [], []
    for path in _checkpoint_folders(run / "checkpoints"):
        step = _saved_step(path)
        if step is None:
            unfinished.append(path)
        else:
            whole.append(step)
    return sorted(whole), unfinished


def read_weights(model: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(model / "model.safetensors"))


def metric_records(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()] if path.exists() else []


class TrainingScenario(Scenario):
    kind = "training"

    def __init__(self, work: Path, models: Any, steps: int = 6) -> None:
        super().__init__(work)
        self.export = tiny_export(work)
        self.steps = steps
        self.options = ["--model", models.policy, "--lr", "1e-3", "--batch-size", "2", "--per-device-batch-size", "2",
                        "--logging-steps", "1", "--no-gradient-checkpointing", "--max-steps", steps,
                        "--save-steps", "1", "--save-total-limit", "2", "--jsonl"]
        self.reference_weights: dict[str, np.ndarray] = {}
        self.reference_metrics: list[dict[str, Any]] = []
        self.newest_seen = 0

    def argv(self, folder: Path, attempt: int) -> list[str]:
        run = folder / "run"
        if (run / "run.json").exists():
            return dmtui("train", "--out", run, "--resume", "--jsonl")
        return dmtui("train", self.export, "--out", run, *self.options)

    def prepare(self, folder: Path) -> None:
        self.newest_seen = 0

    def watched(self, folder: Path) -> Path:
        return folder / "run"

    def remember_reference(self, folder: Path) -> None:
        self.reference_weights = read_weights(folder / "run" / "final")
        self.reference_metrics = metric_records(folder / "run")

    def after_kill(self, folder: Path, trial: Trial) -> None:
        run = folder / "run"
        whole, unfinished = checkpoint_steps(run)
        damaged, temps = check_tree(run, skip=set(unfinished))
        trial.lost += damaged
        trial.mid_write += temps > 0 or bool(unfinished)
        newest = max(whole, default=0)
        for path in unfinished:
            step = int(path.name.rsplit("-", 1)[1])
            if step <= newest:
                trial.lost.append(f"{path} is unfinished but older than checkpoint-{newest}")
        if newest < self.newest_seen:
            trial.lost.append(f"the newest checkpoint went back from step {self.newest_seen} to {newest}")
        self.newest_seen = newest
        steps = [record["step"] for record in metric_records(run)] if not damaged else []
        if steps != list(range(1, len(steps) + 1)):
            trial.lost.append(f"metrics.jsonl holds steps {steps}")

    def after_finish(self, folder: Path, trial: Trial) -> None:
        run = folder / "run"
        trial.lost += check_tree(run)[0]
        record = json.loads((run / "run.json").read_text("utf-8"))
        if record.get("outcome", {}).get("status") != "done":
            trial.lost.append(f"run.json's outcome is {record.get('outcome')}")
        metrics = metric_records(run)
        if [m["step"] for m in metrics] != [m["step"] for m in self.reference_metrics]:
            trial.lost.append(f"metrics.jsonl holds steps {[m['step'] for m in metrics]}")
        else:
            for got, expected in zip(metrics, self.reference_metrics):
                differ = [key for key, value in expected.items() if isinstance(value, float)
                          and not same_number(got.get(key, float("nan")), value)]
                if differ:
                    trial.lost.append(f"step {got['step']}: {', '.join(differ)} differ from the uninterrupted run")
        weights = read_weights(run / "final")
        worst = max(float(np.abs(weights[k] - v).max()) for k, v in self.reference_weights.items())
        if worst > TOLERANCE:
            trial.lost.append(f"final weights differ from the uninterrupted run's by up to {worst:.3g}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["annotate"]:
        annotate(Path(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["append"]:
        append_parts(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit("usage: faults.py annotate DB UPDATES | append FOLDER PARTS ROWS")
