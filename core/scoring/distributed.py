"""Sharded scoring: one `dmtui score` process per rank, under a launcher or alone.

Where the rank comes from:
- a launcher: torchrun and `accelerate launch --multi_gpu` set RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR and MASTER_PORT; the ranks then form a process group;
- `--rank R --world-size W`: one rank run alone, without a group, e.g. to rerun a rank
  that died. It is the same shard of the same tables, so its work joins the others'.

A run under a launcher, as `dmtui score` drives it:
1. Rank 0 prepares before the group forms: it opens (or creates) the workspace, loads
   the dataset into the workspace cache, and trains the seed policy pi_1 when implicit
   margins need one, with the launcher's variables hidden so that this training is an
   ordinary single-process run. The other ranks wait for it in `process_group`, then
   open what it prepared. Only rank 0 ever trains pi_1; a lone rank that is not rank 0
   needs it made already (core.scoring.run says so).
2. Every rank scores the pairs i with i % W == R into its own checkpointed parts
   (core.scoring.run, core.store.scores): a crash loses at most one checkpoint per rank.
3. Every rank, stopped early or not, sends its report to rank 0 (the gather is where they
   meet); when none stopped, rank 0 merges (`merge_shards`): every
   source table holding every pair of the dataset is compacted into one part. A lone rank
   merges the same way when its work completes the tables, and otherwise reports which
   ranks still have pairs to score. Merging is idempotent, and a crash mid-merge leaves a
   readable table (`ScoreStore.compact` writes the merged part before removing any).

Rank and world size never enter a score table's fingerprint: all ranks, and a later
single-process run, share the same tables.

Only barriers and small pickled reports cross processes, so the group uses gloo (TCP)
on GPU machines too: NCCL would move nothing faster here, while its barrier runs on
the GPU and its watchdog aborts long waits. A rank waits up to `WAIT_TIMEOUT` for the
others (rank 0's preparation, the slowest shard).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow.compute as pc

from core.data.loading import LoadedDataset
from core.errors import DmtuiError
from core.scoring.run import ScoringReport, SourceReport, record_truncation
from core.store.scores import ScoreStore
from core.store.workspace import Workspace

WAIT_TIMEOUT = timedelta(hours=24)
"""How long a rank waits for the others at a barrier; under torchrun a rank that fails
ends the whole run at once, so this only bounds a hung rank."""
LAUNCHER_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "MASTER_ADDR",
    "MASTER_PORT",
)
LAUNCHER_PREFIXES = ("TORCHELASTIC_",)


class DistributedError(DmtuiError):
    """The rank settings are not usable."""


@dataclass(frozen=True)
class Shard:
    """Which share of the pairs this process scores, and whether it runs with its peers."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    """Rank on this machine: picks the GPU."""
    launched: bool = False
    """A launcher started all ranks together (it set MASTER_ADDR): they form a process group."""

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def speaks(self) -> bool:
        """Draws progress and prints the report: rank 0 of a group, or a rank that runs alone."""
        return self.main or not self.launched


def detect_shard(
    rank: int | None = None, world_size: int | None = None, environ: Mapping[str, str] | None = None
) -> Shard:
    """The shard named by `rank`/`world_size` (a lone rank), else by a launcher, else the whole dataset.

    >>> detect_shard(environ={})
    Shard(rank=0, world_size=1, local_rank=0, launched=False)
    >>> detect_shard(environ={"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node0"})
    Shard(rank=3, world_size=4, local_rank=1, launched=True)
    >>> detect_shard(1, 2, environ={})
    Shard(rank=1, world_size=2, local_rank=0, launched=False)
    """
    launcher = _launcher_shard(os.environ if environ is None else environ)
    if rank is None and world_size is None:
        return launcher
    if rank is None or world_size is None:
        raise DistributedError(
            "--rank and --world-size go together", "pass both, e.g. --rank 1 --world-size 4 to rerun rank 1 of 4 alone"
        )
    if launcher.launched:
        raise DistributedError(
            f"--rank/--world-size run one rank alone, but a launcher started this process as rank "
            f"{launcher.rank} of {launcher.world_size}",
            "leave them out under torchrun or accelerate launch: the launcher gives every process its rank",
        )
    return _checked(Shard(rank, world_size), "--rank/--world-size")


def _launcher_shard(environ: Mapping[str, str]) -> Shard:
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return Shard()
    try:
        values = {name: int(environ.get(name, "0")) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    except ValueError as error:
        raise DistributedError(
            f"a launcher variable is not a whole number ({error})",
            "check RANK, WORLD_SIZE and LOCAL_RANK in the environment",
        ) from error
    shard = Shard(
        values["RANK"],
        values["WORLD_SIZE"],
        values["LOCAL_RANK"],
        launched=values["WORLD_SIZE"] > 1 and bool(environ.get("MASTER_ADDR")),
    )
    return _checked(shard, "RANK/WORLD_SIZE")


def _checked(shard: Shard, origin: str) -> Shard:
    if shard.world_size < 1 or not 0 <= shard.rank < shard.world_size:
        raise DistributedError(
            f"{origin}: rank {shard.rank} of world size {shard.world_size} does not exist",
            "the world size is at least 1 and ranks count 0 .. world size - 1",
        )
    return shard


def shard_device(requested: str, shard: Shard, environ: Mapping[str, str] | None = None) -> str:
    """This rank's device: under a launcher, "auto" and "cuda" mean the GPU of LOCAL_RANK.

    That GPU also becomes the process's current CUDA device: a `torch.cuda` call without
    a device (``empty_cache()``) would otherwise open a context on GPU 0 in every rank.
    With fewer visible GPUs than ranks per machine, ranks share them round-robin.
    `accelerate launch --cpu` (ACCELERATE_USE_CPU) turns "auto" into cpu.
    """
    import torch

    environ = os.environ if environ is None else environ
    if requested == "auto" and environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"):
        return "cpu"
    if requested not in ("auto", "cuda") or not shard.launched or not torch.cuda.is_available():
        return requested
    index = shard.local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return f"cuda:{index}"


@contextmanager
def process_group(shard: Shard) -> Iterator[None]:
    """The ranks' process group while the block runs, when a launcher started them; nothing otherwise.

    Forming the group waits until every rank has joined (up to `WAIT_TIMEOUT`).
    """
    if not shard.launched:
        yield
        return
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world_size, timeout=WAIT_TIMEOUT)
    try:
        dist.barrier()
        yield
        dist.barrier()  # no rank leaves while another may still be talking to it
    finally:
        dist.destroy_process_group()


def in_process_group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def gather_on_main(value: Any, shard: Shard) -> list[Any] | None:
    """Every rank's `value` in rank order on rank 0, None on the others; alone, ``[value]``."""
    if not in_process_group():
        return [value]
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * shard.world_size if shard.main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


@contextmanager
def launcher_hidden() -> Iterator[None]:
    """The launcher's variables removed from the environment while the block runs.

    Training inside (the seed policy on rank 0) then runs as one ordinary process:
    accelerate and transformers would otherwise set up data-parallel training with
    ranks that are not training.
    """
    hidden = {
        name: value
        for name, value in os.environ.items()
        if name in LAUNCHER_VARIABLES or name.startswith(LAUNCHER_PREFIXES)
    }
    for name in hidden:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(hidden)


# Reports and the merge ------------------------------------------------------------------


def combine_reports(reports: list[ScoringReport]) -> ScoringReport:
    """One report for `reports` (in rank order): counts summed per source, the slowest rank's seconds."""
    first = reports[0]
    combined = replace(first, sources={}, device=",".join(dict.fromkeys(r.device for r in reports)))
    for name, source in first.sources.items():
        shards = [r.sources[name] for r in reports if name in r.sources]
        combined.sources[name] = SourceReport(
            name,
            source.fingerprint,
            pairs=sum(s.pairs for s in shards),
            scored=sum(s.scored for s in shards),
            reused=sum(s.reused for s in shards),
            truncated=sum(s.truncated for s in shards),
            max_length=source.max_length,
            min_prompt_tokens=source.min_prompt_tokens,
            boundary_moved=sum(s.boundary_moved for s in shards),
            skipped_truncated=sum(s.skipped_truncated for s in shards),
            token_identical_ids=[pid for s in shards for pid in s.token_identical_ids],
            seconds=max(s.seconds for s in shards),
            models=dict(source.models),
            notes=list(dict.fromkeys(note for s in shards for note in s.notes)),
        )
    return combined


@dataclass
class MergeReport:
    """Which source tables were merged, and for the others what is still missing."""

    merged: list[str] = field(default_factory=list)
    missing: dict[str, dict[str, Any]] = field(default_factory=dict)
    """source -> {"pairs": pairs of the dataset not in its table, "ranks": the ranks that score them}."""

    def to_json(self) -> dict[str, Any]:
        return {"merged": self.merged, "missing": self.missing}


def merge_shards(dataset: LoadedDataset, workspace: Workspace, report: ScoringReport) -> MergeReport:
    """Compact each source table of `report` that holds every pair of `dataset` into one part.

    Idempotent: a merged table is one part and stays as it is. A table still missing
    pairs is left alone and named with the ranks (of ``report.world_size``) that owe them.
    """
    result = MergeReport()
    ids = dataset.pairs["pair_id"]
    for name, source in report.sources.items():
        store = ScoreStore(workspace.scores_dir, name, source.fingerprint)
        table = store.read()
        stored = (
            pc.is_in(ids, value_set=table["pair_id"]).to_numpy(zero_copy_only=False)
            if table is not None
            else np.zeros(len(ids), dtype=bool)
        )
        missing = np.flatnonzero(~stored)
        if len(missing):
            ranks = np.unique(missing % report.world_size).tolist()
            result.missing[name] = {"pairs": len(missing), "ranks": ranks}
        else:
            store.compact()
            record_truncation(store, ids.combine_chunks())
            result.merged.append(name)
    return result
