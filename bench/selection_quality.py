"""Selection quality on the demo world, judged by its oracle (not run in CI).

For every (world seed, noise level): generate a demo world (core.demo.world) into a work
folder, load it into a workspace, score it ONCE with the demo models the way
`dmtui score --demo` does (external margins from the demo reward model, implicit margins
from a seed-DPO pi_1 trained on this world's own D0 with lr 1e-4, IFD under pi_0), then
for every strategy select 10% of the pairs (core.selection.select) and measure, with the
oracle file, which the selection never sees:

- label precision: share of the selected pairs whose label agrees with the oracle
  (neither ``noise_flipped`` nor ``toxic_flip``);
- mean oracle margin r*(x, y_w) - r*(x, y_l) of the selected pairs (negative for a wrong label);
- per margin source, the share of the planted toxic flips that fall in its 5% BOT region
  (the lowest 5% of that raw margin, before any outlier trim);
- per world, the Spearman correlation of each margin with the oracle margin.

Prints mean +- std over the world seeds, per noise level, as markdown tables.

    .venv/bin/python bench/selection_quality.py --quick           # 1 seed, noise 1.0, 1,000 pairs
    .venv/bin/python bench/selection_quality.py                   # 3 seeds x noise 0.5/1/2 x 4,000 pairs
    .venv/bin/python bench/selection_quality.py --seeds 0,1,2 --noise 0.5,1,2 --pairs 4000 \
        --work /tmp/sq --json-out /tmp/sq/results.json           # keep the workspaces: reruns reuse scores

The metric functions at the top are pure numpy and are tested in
tests/test_selection_quality.py. The demo models are the default ones (built for world
seed 0, noise 1.0); the reward model never saw any dataset pair (its own sample stream),
so on other seeds and noise levels it is as out-of-sample as on the default world.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEMO_SEED_LR = 1e-4
"""Seed DPO learning rate, the value `dmtui score --demo` uses (dmtui/headless/score.py)."""
BUDGET = 0.1
BOT_SHARE = 0.05
SINGLE_SOURCES = ("external", "implicit", "ifd")
FUSED_SOURCES = ("external", "implicit")


# Strategies ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Strategy:
    """One row of the table: a selection mode, over a margin source for TOP / MID / BOT."""

    name: str
    mode: str
    source: str | None = None

    @property
    def sources_needed(self) -> tuple[str, ...]:
        if self.mode in ("dm-mul", "dm-add"):
            return FUSED_SOURCES
        if self.mode == "low-gap":
            return ("ifd",)
        return (self.source,) if self.source else ()


def strategies(with_ifd: bool = True) -> tuple[Strategy, ...]:
    """Random, TOP/MID/BOT of every single source, Low-Gap, DM-ADD, DM-MUL (IFD ones only `with_ifd`)."""
    rows = [Strategy("Random", "random")]
    for source in SINGLE_SOURCES:
        if source == "ifd" and not with_ifd:
            continue
        label = {"external": "External", "implicit": "Implicit", "ifd": "IFD"}[source]
        rows += [Strategy(f"{label} {mode.upper()}", mode, source) for mode in ("top", "mid", "bot")]
    if with_ifd:
        rows.append(Strategy("Low-Gap", "low-gap"))
    rows += [Strategy("DM-ADD", "dm-add"), Strategy("DM-MUL", "dm-mul")]
    return tuple(rows)


STRATEGIES = strategies()


def selection_params(strategy: Strategy, budget: float = BUDGET, seed: int = 0):
    from core.selection import SelectionParams

    return SelectionParams(mode=strategy.mode, budget=budget, sources=FUSED_SOURCES,
                           source=strategy.source, seed=seed)


# Metrics (pure numpy) --------------------------------------------------------------------

def label_correct(noise_flipped: Sequence[bool], toxic_flip: Sequence[bool]) -> np.ndarray:
    """True where the label agrees with the oracle: neither noise-flipped nor a planted toxic flip."""
    return ~(np.asarray(noise_flipped, dtype=bool) | np.asarray(toxic_flip, dtype=bool))


def label_precision(selected: Sequence[int], correct: Sequence[bool]) -> float:
    """Share of the selected pair indices whose label is correct; NaN for an empty selection."""
    index = np.asarray(selected, dtype=np.int64)
    if index.size == 0:
        return float("nan")
    return float(np.asarray(correct, dtype=bool)[index].mean())


def mean_oracle_margin(selected: Sequence[int], oracle_margin: Sequence[float]) -> float:
    """Mean oracle margin r*(y_w) - r*(y_l) of the selected pair indices; NaN when empty."""
    index = np.asarray(selected, dtype=np.int64)
    if index.size == 0:
        return float("nan")
    return float(np.asarray(oracle_margin, dtype=np.float64)[index].mean())


def bot_region(margin: Sequence[float], share: float = BOT_SHARE) -> np.ndarray:
    """Mask of the BOT region: the round(share * n) lowest finite margins (n = finite ones).

    Ties at the cut-off go to the lower index (a stable sort); NaN / inf margins are never in it.
    """
    values = np.asarray(margin, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(values))
    k = math.floor(share * finite.size + 0.5)
    mask = np.zeros(values.size, dtype=bool)
    if k:
        order = finite[np.argsort(values[finite], kind="stable")]
        mask[order[:k]] = True
    return mask


def bot_region_catch(margin: Sequence[float], target: Sequence[bool], share: float = BOT_SHARE) -> float:
    """Share of the `target` pairs (e.g. planted toxic flips) inside the BOT region of `margin`; NaN if none."""
    wanted = np.asarray(target, dtype=bool)
    if not wanted.any():
        return float("nan")
    return float((bot_region(margin, share) & wanted).sum() / wanted.sum())


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0.0 for a single value) of the finite values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def fmt(values: Sequence[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def align_oracle(pair_ids: Sequence[str], oracle: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Oracle columns (oracle_margin, noise_flipped, toxic_flip) in the order of `pair_ids`."""
    by_id = {entry["pair_id"]: entry for entry in oracle}
    missing = [pid for pid in pair_ids if pid not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} loaded pairs have no oracle entry (first {missing[0]})")
    rows = [by_id[pid] for pid in pair_ids]
    return {
        "oracle_margin": np.array([r["oracle_margin"] for r in rows], dtype=np.float64),
        "noise_flipped": np.array([r["noise_flipped"] for r in rows], dtype=bool),
        "toxic_flip": np.array([r["toxic_flip"] for r in rows], dtype=bool),
    }


def evaluate_world(margins: dict[str, np.ndarray], oracle: dict[str, np.ndarray], tie_break: np.ndarray | None,
                   strategy_list: Sequence[Strategy], budget: float, seed: int) -> dict[str, Any]:
    """Every metric of one scored world (no models: margins and oracle columns in, numbers out)."""
    from core.selection import select
    from core.stats import spearman

    correct = label_correct(oracle["noise_flipped"], oracle["toxic_flip"])
    wrong = ~correct
    result: dict[str, Any] = {"pairs": int(correct.size), "wrong_labels": int(wrong.sum()),
                              "toxic_flips": int(oracle["toxic_flip"].sum()),
                              "noise_flips": int(oracle["noise_flipped"].sum()), "strategies": {}}
    fused: dict[str, np.ndarray] = {}
    for strategy in strategy_list:
        selection = select(margins, selection_params(strategy, budget, seed), tie_break=tie_break)
        picked = selection.indices
        result["strategies"][strategy.name] = {
            "selected": int(picked.size),
            "precision": label_precision(picked, correct),
            "oracle_margin": mean_oracle_margin(picked, oracle["oracle_margin"]),
            "toxic_selected": int(oracle["toxic_flip"][picked].sum()),
        }
        if strategy.mode in ("dm-mul", "dm-add") and selection.score is not None:
            fused[strategy.name] = np.asarray(selection.score, dtype=np.float64)
    # References that no strategy can beat / must beat: every pair, and the oracle's own top 10%.
    everything = np.arange(correct.size)
    k = math.floor(budget * correct.size + 0.5)
    oracle_top = np.argsort(-oracle["oracle_margin"], kind="stable")[:k]
    result["reference"] = {
        "All pairs": {"precision": label_precision(everything, correct),
                      "oracle_margin": mean_oracle_margin(everything, oracle["oracle_margin"])},
        "Oracle TOP (ceiling)": {"precision": label_precision(oracle_top, correct),
                                 "oracle_margin": mean_oracle_margin(oracle_top, oracle["oracle_margin"])},
    }
    scores = {**margins, **fused}
    result["bot_toxic_catch"] = {name: bot_region_catch(v, oracle["toxic_flip"]) for name, v in scores.items()}
    result["bot_wrong_share"] = {name: label_precision(np.flatnonzero(bot_region(v)), wrong)
                                 for name, v in scores.items()}
    result["spearman"] = {name: spearman(v, oracle["oracle_margin"]) for name, v in scores.items()}
    return result


# Scoring a world (models) ------------------------------------------------------------------

def build_and_score(world_config, folder: Path, models, sources: tuple[str, ...], log) -> dict[str, Any]:
    """Write the world, score it once (cached in the workspace), return margins, oracle and timings."""
    from core.demo.world import write_world
    from core.margin_sources import MarginSpec, resolve_margins
    from core.scoring import ScoringConfig, score
    from core.selection import tie_keys_from_pair_ids
    from core.workspace import Workspace

    started = time.monotonic()
    data = folder / "world"
    if not (data / "oracle.jsonl").is_file():
        write_world(data, world_config)
    workspace = Workspace.open_or_create(str(data / "pairs.jsonl"), folder / "workspace")
    dataset = workspace.load()
    config = ScoringConfig(sources=sources, reward_model=str(models.reward),
                           reference_model=str(models.policy), seed_lr=DEMO_SEED_LR)
    report = score(dataset, workspace, config)
    seconds = time.monotonic() - started
    resolved = resolve_margins(dataset, [MarginSpec(s) for s in sources], workspace)
    pair_ids = dataset.pairs["pair_id"].to_pylist()
    oracle_rows = [json.loads(line) for line in (data / "oracle.jsonl").read_text("utf-8").splitlines() if line]
    log(f"  scored {len(pair_ids)} pairs in {seconds:.0f} s "
        + ", ".join(f"{n} {s.seconds:.0f}s ({s.reused} reused)" for n, s in report.sources.items())
        + (f"; pi_1 trained in {report.seed_policy.get('train_seconds', 0):.0f} s on "
           f"{report.seed_policy['seed_pairs']} pairs" if report.seed_policy and report.seed_policy["trained_now"]
           else ""))
    return {"margins": resolved.margins, "oracle": align_oracle(pair_ids, oracle_rows),
            "tie_break": tie_keys_from_pair_ids(pair_ids), "seconds": seconds,
            "seed_policy": report.seed_policy}


# Tables ------------------------------------------------------------------------------------

def markdown_tables(results: list[dict[str, Any]], strategy_list: Sequence[Strategy]) -> str:
    """Markdown: per noise level, precision and oracle margin per strategy; BOT catch; Spearman."""
    noises = sorted({r["noise"] for r in results})
    by_noise = {n: [r for r in results if r["noise"] == n] for n in noises}
    seeds = {n: sorted(r["seed"] for r in by_noise[n]) for n in noises}
    intro = (f"Mean ± std over world seeds {', '.join(map(str, seeds[noises[0]]))} "
             f"({results[0]['pairs']:,} pairs per world, budget {BUDGET:.0%}).")
    lines = [intro, ""]

    head = "| strategy | " + " | ".join(f"precision @ noise {n:g} | oracle margin @ noise {n:g}" for n in noises)
    lines += ["### Label precision and mean oracle margin of the selected 10%", "", head + " |",
              "|---|" + "---:|" * (2 * len(noises))]
    names = [s.name for s in strategy_list] + ["All pairs", "Oracle TOP (ceiling)"]
    for name in names:
        cells = []
        for n in noises:
            block = [r["strategies"].get(name) or r["reference"].get(name) for r in by_noise[n]]
            cells += [fmt([b["precision"] for b in block]), fmt([b["oracle_margin"] for b in block], 2)]
        shown = f"**{name}**" if name == "DM-MUL" else (f"_{name}_" if name in ("All pairs",
                                                                             "Oracle TOP (ceiling)") else name)
        lines.append(f"| {shown} | " + " | ".join(cells) + " |")

    score_names = list(results[0]["bot_toxic_catch"])
    for key, title, digits in (
        ("bot_toxic_catch", f"Share of the planted toxic flips inside each score's {BOT_SHARE:.0%} BOT region", 3),
        ("bot_wrong_share", f"Share of wrong labels (noise or toxic) inside each {BOT_SHARE:.0%} BOT region", 3),
        ("spearman", "Spearman of each score with the oracle margin", 3),
    ):
        lines += ["", f"### {title}", "", "| score | " + " | ".join(f"noise {n:g}" for n in noises) + " |",
                  "|---|" + "---:|" * len(noises)]
        for name in score_names:
            lines.append(f"| {name} | " + " | ".join(fmt([r[key][name] for r in by_noise[n]], digits)
                                                     for n in noises) + " |")
    lines += ["", "### Per world", "", "| seed | noise | wrong labels | toxic flips | scoring s |", "|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r["noise"], r["seed"])):
        lines.append(f"| {r['seed']} | {r['noise']:g} | {r['wrong_labels']} ({r['wrong_labels'] / r['pairs']:.1%}) "
                     f"| {r['toxic_flips']} | {r['scoring_seconds']:.0f} |")
    return "\n".join(lines)


def parse_list(text: str, kind=float) -> list:
    return [kind(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, noise 1.0, 1,000 pairs")
    parser.add_argument("--pairs", type=int, help="pairs per world (default 4000; --quick 1000)")
    parser.add_argument("--seeds", help="comma-separated world seeds (default 0,1,2; --quick 0)")
    parser.add_argument("--noise", help="comma-separated noise scales (default 0.5,1,2; --quick 1)")
    parser.add_argument("--no-ifd", action="store_true", help="skip IFD scoring (and Low-Gap, IFD TOP/MID/BOT)")
    parser.add_argument("--work", help="work folder for worlds and workspaces (kept; reruns reuse scores). "
                                       "Default: a temp folder, deleted at the end")
    parser.add_argument("--json-out", help="write every per-world number to this JSON file")
    parser.add_argument("--markdown-out", help="write the tables to this markdown file")
    args = parser.parse_args(argv)

    from core.demo.models import DemoModelsConfig, ensure_demo_models
    from core.demo.world import WorldConfig

    pairs = args.pairs or (1000 if args.quick else 4000)
    seeds = parse_list(args.seeds, int) if args.seeds else ([0] if args.quick else [0, 1, 2])
    noises = parse_list(args.noise) if args.noise else ([1.0] if args.quick else [0.5, 1.0, 2.0])
    sources = ("external", "implicit") if args.no_ifd else SINGLE_SOURCES
    strategy_list = strategies(with_ifd=not args.no_ifd)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    models = ensure_demo_models(DemoModelsConfig())
    log(f"demo models: {models.root} (reward-oracle Spearman at build "
        f"{models.metrics.get('reward_oracle_spearman')})")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dmtui-selection-quality-"))
    results = []
    try:
        for noise in noises:
            for seed in seeds:
                config = WorldConfig(n_pairs=pairs, noise_scale=noise, bad_rows=0, seed=seed)
                log(f"world seed {seed}, noise {noise:g}, {pairs} pairs")
                scored = build_and_score(config, work / f"n{noise:g}-s{seed}-p{pairs}", models, sources, log)
                world = evaluate_world(scored["margins"], scored["oracle"], scored["tie_break"], strategy_list,
                                       BUDGET, seed)
                world.update(seed=seed, noise=noise, scoring_seconds=scored["seconds"],
                             seed_policy=scored["seed_policy"])
                results.append(world)
                dm = world["strategies"]["DM-MUL"]
                log(f"  DM-MUL precision {dm['precision']:.3f}, oracle margin {dm['oracle_margin']:.2f}; "
                    f"Random {world['strategies']['Random']['precision']:.3f}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - started
    tables = markdown_tables(results, strategy_list)
    print(tables)
    print(f"\ntotal {total:.0f} s ({total / 60:.1f} min) for {len(results)} worlds")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"settings": {
            "pairs": pairs, "seeds": seeds, "noise": noises, "budget": BUDGET, "bot_share": BOT_SHARE,
            "seed_lr": DEMO_SEED_LR, "sources": sources, "demo_models": str(models.root),
            "total_seconds": round(total, 1)}, "worlds": results}, indent=2, default=float), encoding="utf-8")
    if args.markdown_out:
        Path(args.markdown_out).write_text(tables + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
