"""Selection quality on a demo world, judged by its oracle (not run in CI).

For every (world seed, noise level): generate a world (core.demo.world; ``--world demo``
or ``blind-spot``, core.demo.models.demo_world) into a work folder, load it into a
workspace, score it ONCE with the world's models (external margins from its reward model;
implicit margins from the default seed policy at the demo's rate, core.demo.models.DEMO_SEED_DPO:
two cross-fit pi_1 on whole folds trained to a held-out plateau, or with ``--seed-settings
demo`` the cheaper pi_1 of `dmtui score --demo`, DEMO_SCORING; IFD under pi_0), then for
every strategy select 10% of the pairs (core.selection.selector.select) and measure, with the oracle
file, which the selection never sees:

- label precision: share of the selected pairs whose label agrees with the oracle
  (neither ``noise_flipped`` nor ``toxic_flip``);
- mean oracle margin r*(x, y_w) - r*(x, y_l) of the selected pairs (negative for a wrong label);
- bias share: share of the selected pairs chosen only because of the reward model's bias,
  i.e. wrong by the oracle (margin < 0) but right by the reward model's teacher
  (core.demo.models.judge_reward with the world's judge);
- per score, the share of the planted toxic flips that fall in its 5% BOT region
  (the lowest 5% of that raw margin, before any outlier trim);
- per world, the Spearman correlation of each margin with the oracle margin, and the seed
  policy's held-out accuracy.

Prints mean +- std over the world seeds, per noise level, as markdown tables, and the
issue-19 goals against the noise-1 worlds.

    .venv/bin/python bench/selection_quality.py --quick           # 1 seed, noise 1.0, 1,000 pairs
    .venv/bin/python bench/selection_quality.py                   # 3 seeds x noise 0.5/1/2 x 4,000 pairs
    .venv/bin/python bench/selection_quality.py --world blind-spot --work /tmp/sq-blind \
        --json-out /tmp/sq-blind/results.json                    # keep the workspaces: reruns reuse scores

The metric functions at the top are pure numpy and are tested in
tests/test_selection_quality.py. The models of a world are built for its seed 0, noise
1.0; the reward model never saw any dataset pair (its own sample stream), so on other
seeds and noise levels it is as out-of-sample as on the default world.
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
    from core.selection.selector import SelectionParams

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


def median_rank(margin: Sequence[float], target: Sequence[bool]) -> float:
    """Median percentile rank (0 = lowest, 1 = highest finite margin) of the `target` pairs; NaN if none.

    Tells where a score puts a group (e.g. the planted toxic flips) even when the group is wider
    than one BOT region.

    >>> median_rank([0.0, 1.0, 2.0, 3.0, 4.0], [True, True, False, False, False])
    0.125
    """
    values = np.asarray(margin, dtype=np.float64)
    wanted = np.asarray(target, dtype=bool) & np.isfinite(values)
    finite = np.flatnonzero(np.isfinite(values))
    if not wanted.any() or finite.size < 2:
        return float("nan")
    rank = np.empty(values.size)
    rank[finite[np.argsort(values[finite], kind="stable")]] = np.arange(finite.size) / (finite.size - 1)
    return float(np.median(rank[wanted]))


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


def bias_only(oracle_margin: Sequence[float], teacher_margin: Sequence[float]) -> np.ndarray:
    """True where a label is wrong by the oracle but right by the reward model's teacher.

    >>> bias_only([-0.4, 1.0, -2.0, -0.2], [0.4, 1.0, -1.0, 0.0]).tolist()
    [True, False, False, False]
    """
    return (np.asarray(oracle_margin, dtype=np.float64) < 0) & (np.asarray(teacher_margin, dtype=np.float64) > 0)


def teacher_margins(pairs: Sequence[dict[str, Any]], judge: str) -> np.ndarray:
    """Margin of the reward model's teacher (the oracle with its judge's bias) for demo pairs."""
    from core.demo.models import judge_reward

    def text(messages: Any) -> str:
        return messages[-1]["content"] if isinstance(messages, list) else messages

    return np.array([judge_reward(text(p["prompt"]), text(p["chosen"]), judge)
                     - judge_reward(text(p["prompt"]), text(p["rejected"]), judge) for p in pairs])


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
    from core.selection.selector import select
    from core.selection.stats import spearman

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
            "bias_share": label_precision(picked, oracle["bias_only"]),
            "toxic_selected": int(oracle["toxic_flip"][picked].sum()),
        }
        if strategy.mode in ("dm-mul", "dm-add") and selection.score is not None:
            fused[strategy.name] = np.asarray(selection.score, dtype=np.float64)
    # References that no strategy can beat / must beat: every pair, and the oracle's own top 10%.
    everything = np.arange(correct.size)
    k = math.floor(budget * correct.size + 0.5)
    oracle_top = np.argsort(-oracle["oracle_margin"], kind="stable")[:k]
    result["reference"] = {
        name: {"precision": label_precision(rows, correct),
               "oracle_margin": mean_oracle_margin(rows, oracle["oracle_margin"]),
               "bias_share": label_precision(rows, oracle["bias_only"])}
        for name, rows in (("All pairs", everything), ("Oracle TOP (ceiling)", oracle_top))
    }
    scores = {**margins, **fused}
    result["bot_toxic_catch"] = {name: bot_region_catch(v, oracle["toxic_flip"]) for name, v in scores.items()}
    result["bot10_toxic_catch"] = {name: bot_region_catch(v, oracle["toxic_flip"], 2 * BOT_SHARE)
                                   for name, v in scores.items()}
    result["toxic_median_rank"] = {name: median_rank(v, oracle["toxic_flip"]) for name, v in scores.items()}
    result["bot_wrong_share"] = {name: label_precision(np.flatnonzero(bot_region(v)), wrong)
                                 for name, v in scores.items()}
    result["spearman"] = {name: spearman(v, oracle["oracle_margin"]) for name, v in scores.items()}
    return result


# Scoring a world (models) ------------------------------------------------------------------

def build_and_score(world_config, folder: Path, models, judge: str, sources: tuple[str, ...], seed_split: str,
                    seed_settings: dict[str, Any], log) -> dict[str, Any]:
    """Write the world, score it once (cached in the workspace), return margins, oracle and timings."""
    from core.demo.world import write_world
    from core.scoring.config import ScoringConfig
    from core.scoring.run import score
    from core.scoring.seed_report import describe
    from core.selection.selector import tie_keys_from_pair_ids
    from core.store.margin_sources import MarginSpec, resolve_margins
    from core.store.workspace import Workspace

    started = time.monotonic()
    data = folder / "world"
    if not (data / "oracle.jsonl").is_file():
        write_world(data, world_config)
    workspace = Workspace.open_or_create(str(data / "pairs.jsonl"), folder / "workspace")
    dataset = workspace.load()
    config = ScoringConfig(sources=sources, reward_model=str(models.reward), reference_model=str(models.policy),
                           seed_split=seed_split, **seed_settings)
    report = score(dataset, workspace, config)
    seconds = time.monotonic() - started
    resolved = resolve_margins(dataset, [MarginSpec(s) for s in sources], workspace)
    pair_ids = dataset.pairs["pair_id"].to_pylist()
    oracle_rows = [json.loads(line) for line in (data / "oracle.jsonl").read_text("utf-8").splitlines() if line]
    oracle = align_oracle(pair_ids, oracle_rows)
    oracle["bias_only"] = bias_only(oracle["oracle_margin"], teacher_margins(dataset.pairs.to_pylist(), judge))
    log(f"  scored {len(pair_ids)} pairs in {seconds:.0f} s "
        + ", ".join(f"{n} {s.seconds:.0f}s ({s.reused} reused)" for n, s in report.sources.items())
        + (f"; pi_1 trained in {report.seed_policy['train_seconds']:.0f} s" if report.seed_policy else ""))
    log(f"  {describe(report.seed_policy, report.implicit_external_spearman)}")
    return {"margins": resolved.margins, "oracle": oracle, "tie_break": tie_keys_from_pair_ids(pair_ids),
            "seconds": seconds, "seed_policy": report.seed_policy,
            "implicit_external_spearman": report.implicit_external_spearman}


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
        lines.append(f"| {shown_name(name)} | " + " | ".join(cells) + " |")

    lines += ["", "### Share of each selection chosen only because of the reward model's bias", "",
              "| strategy | " + " | ".join(f"noise {n:g}" for n in noises) + " |", "|---|" + "---:|" * len(noises)]
    for name in names:
        cells = [fmt([(r["strategies"].get(name) or r["reference"].get(name))["bias_share"] for r in by_noise[n]])
                 for n in noises]
        lines.append(f"| {shown_name(name)} | " + " | ".join(cells) + " |")

    score_names = list(results[0]["bot_toxic_catch"])
    for key, title, digits in (
        ("bot_toxic_catch", f"Share of the planted toxic flips inside each score's {BOT_SHARE:.0%} BOT region", 3),
        ("bot10_toxic_catch", f"Share of the planted toxic flips inside each {2 * BOT_SHARE:.0%} BOT region", 3),
        ("toxic_median_rank", "Median percentile rank of the planted toxic flips in each score (0 = lowest)", 3),
        ("bot_wrong_share", f"Share of wrong labels (noise or toxic) inside each {BOT_SHARE:.0%} BOT region", 3),
        ("spearman", "Spearman of each score with the oracle margin", 3),
    ):
        lines += ["", f"### {title}", "", "| score | " + " | ".join(f"noise {n:g}" for n in noises) + " |",
                  "|---|" + "---:|" * len(noises)]
        for name in score_names:
            lines.append(f"| {name} | " + " | ".join(fmt([r[key][name] for r in by_noise[n]], digits)
                                                     for n in noises) + " |")
    lines += ["", "### Per world", "",
              "| seed | noise | wrong labels | toxic flips | bias-only pairs | pi_1 D0 | held-out accuracy "
              "| best / last step | implicit vs external Spearman | pi_1 s | scoring s |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(results, key=lambda r: (r["noise"], r["seed"])):
        folds = r["seed_policy"]["folds"]
        lines.append(
            f"| {r['seed']} | {r['noise']:g} | {r['wrong_labels']} ({r['wrong_labels'] / r['pairs']:.1%}) "
            f"| {r['toxic_flips']} | {r['bias_only']} | " + " + ".join(str(f["train_pairs"]) for f in folds)
            + " | " + " / ".join(f"{f['held_out_accuracy']:.3f}" for f in folds)
            + " | " + " / ".join(f"{f['best_step']}/{f['steps']}" for f in folds)
            + f" | {r['implicit_external_spearman']:.3f} | {r['seed_policy']['train_seconds']:.0f} "
              f"| {r['scoring_seconds']:.0f} |")
    return "\n".join(lines)


def shown_name(name: str) -> str:
    if name == "DM-MUL":
        return f"**{name}**"
    return f"_{name}_" if name in ("All pairs", "Oracle TOP (ceiling)") else name


GOALS = (
    ("implicit Spearman with the oracle >= 0.6", lambda w: w["spearman"]["implicit"], lambda v: v >= 0.6),
    ("DM-MUL 10% precision minus the best single-source TOP's >= 0",
     lambda w: w["strategies"]["DM-MUL"]["precision"] - max(
         row["precision"] for name, row in w["strategies"].items() if name.endswith(" TOP")),
     lambda v: v >= 0),
    ("implicit BOT 5% catches >= 50% of the planted toxic flips", lambda w: w["bot_toxic_catch"]["implicit"],
     lambda v: v >= 0.5),
)
"""Issue 19's goals that this bench measures: (text, value of one world, reached by the mean)."""


def goals_report(results: list[dict[str, Any]], noise: float = 1.0) -> str:
    """The goals against the mean over the worlds at `noise` (the demo world's own noise level)."""
    worlds = [r for r in results if r["noise"] == noise]
    if not worlds:
        return ""
    lines = [f"Goals (mean ± std over the {len(worlds)} worlds at noise {noise:g}):"]
    for text, value, reached in GOALS:
        values = [value(w) for w in worlds]
        mean, _ = mean_std(values)
        lines.append(f"- {text}: {fmt(values)} -> {'reached' if reached(mean) else 'NOT reached'}")
    return "\n".join(lines)


def parse_list(text: str, kind=float) -> list:
    return [kind(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, noise 1.0, 1,000 pairs")
    parser.add_argument("--world", default="demo", help="demo (its reward model likes links) or blind-spot "
                                                        "(a helpfulness-only reward model); default demo")
    parser.add_argument("--seed-settings", default="default", choices=("default", "demo"),
                        help="seed DPO: the default seed policy at the demo's rate (default), or the cheaper one "
                             "of `dmtui score --demo`")
    parser.add_argument("--seed-split", default="cross-fit", choices=("cross-fit", "exclude"),
                        help="how D0 is kept out of its own implicit margins (default cross-fit)")
    parser.add_argument("--pairs", type=int, help="pairs per world (default 4000; --quick 1000)")
    parser.add_argument("--seeds", help="comma-separated world seeds (default 0,1,2; --quick 0)")
    parser.add_argument("--noise", help="comma-separated noise scales (default 0.5,1,2; --quick 1)")
    parser.add_argument("--no-ifd", action="store_true", help="skip IFD scoring (and Low-Gap, IFD TOP/MID/BOT)")
    parser.add_argument("--work", help="work folder for worlds and workspaces (kept; reruns reuse scores). "
                                       "Default: a temp folder, deleted at the end")
    parser.add_argument("--json-out", help="write every per-world number to this JSON file")
    parser.add_argument("--markdown-out", help="write the tables to this markdown file")
    args = parser.parse_args(argv)

    from core.demo.models import DEMO_SCORING, DEMO_SEED_DPO, demo_world, ensure_demo_models

    seed_settings = DEMO_SEED_DPO if args.seed_settings == "default" else DEMO_SCORING
    pairs = args.pairs or (1000 if args.quick else 4000)
    seeds = parse_list(args.seeds, int) if args.seeds else ([0] if args.quick else [0, 1, 2])
    noises = parse_list(args.noise) if args.noise else ([1.0] if args.quick else [0.5, 1.0, 2.0])
    sources = ("external", "implicit") if args.no_ifd else SINGLE_SOURCES
    strategy_list = strategies(with_ifd=not args.no_ifd)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    _, models_config = demo_world(args.world)
    models = ensure_demo_models(models_config)
    log(f"{args.world} world models: {models.root} (reward-oracle Spearman at build "
        f"{models.metrics.get('reward_oracle_spearman')})")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dmtui-selection-quality-"))
    results = []
    try:
        for noise in noises:
            for seed in seeds:
                config, _ = demo_world(args.world, n_pairs=pairs, noise_scale=noise, bad_rows=0, seed=seed)
                log(f"{args.world} world seed {seed}, noise {noise:g}, {pairs} pairs")
                scored = build_and_score(config, work / f"n{noise:g}-s{seed}-p{pairs}", models,
                                         models_config.reward_judge, sources, args.seed_split, seed_settings, log)
                world = evaluate_world(scored["margins"], scored["oracle"], scored["tie_break"], strategy_list,
                                       BUDGET, seed)
                world.update(seed=seed, noise=noise, scoring_seconds=scored["seconds"],
                             seed_policy=scored["seed_policy"], bias_only=int(scored["oracle"]["bias_only"].sum()),
                             implicit_external_spearman=scored["implicit_external_spearman"])
                results.append(world)
                dm = world["strategies"]["DM-MUL"]
                log(f"  DM-MUL precision {dm['precision']:.3f}, oracle margin {dm['oracle_margin']:.2f}; "
                    f"External TOP {world['strategies']['External TOP']['precision']:.3f}; implicit Spearman "
                    f"{world['spearman']['implicit']:.3f}, BOT catch {world['bot_toxic_catch']['implicit']:.2f}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - started
    tables = markdown_tables(results, strategy_list) + "\n\n" + goals_report(results)
    print(tables)
    print(f"\ntotal {total:.0f} s ({total / 60:.1f} min) for {len(results)} worlds")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"settings": {
            "world": args.world, "seed_split": args.seed_split, "pairs": pairs, "seeds": seeds, "noise": noises,
            "budget": BUDGET, "bot_share": BOT_SHARE, "seed_settings": args.seed_settings, "scoring": seed_settings,
            "sources": sources,
            "models": str(models.root), "total_seconds": round(total, 1)}, "worlds": results},
            indent=2, default=float), encoding="utf-8")
    if args.markdown_out:
        Path(args.markdown_out).write_text(tables + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
