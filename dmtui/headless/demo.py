"""`dmtui demo`: write the demo world's dataset, build its tiny models."""

from __future__ import annotations

import argparse
import json

from core.errors import DmtuiError
from dmtui.headless.common import path_argument, rich_progress
from dmtui.headless.device_options import add_device_arguments

DEFAULT_OUT = "sample_data/demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the offline demo world: its dataset and tiny models",
        description="Generate the synthetic demo dataset (with its oracle) or build its tiny models offline.",
    )
    actions = parser.add_subparsers(dest="demo_command", metavar="ACTION", required=True)

    generate = actions.add_parser("generate", help="write pairs.jsonl, oracle.jsonl and world.json")
    generate.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", type=path_argument, help=f"output folder (default: {DEFAULT_OUT})")
    generate.add_argument("--pairs", type=int, default=4000, metavar="N", help="good pairs (default: 4000)")
    generate.add_argument("--noise", type=float, default=1.0, metavar="S", help="logistic label-noise scale (default: 1.0)")
    generate.add_argument(
        "--toxic-share", type=float, default=0.03, metavar="F", help="share of planted toxic flips (default: 0.03)"
    )
    generate.add_argument("--bad-rows", type=int, default=6, metavar="N", help="broken lines to include (default: 6)")
    generate.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default: 0)")
    generate.set_defaults(handler=run_generate)

    build = actions.add_parser("build", help="build (or find) the tokenizer, pi_0 and reward model")
    build.add_argument(
        "--cache", metavar="DIR", default=None, help="cache root (default: $DMTUI_CACHE or ~/.cache/dmtui)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if the models are cached")
    build.add_argument("--json", action="store_true", help="print the model paths as JSON on stdout")
    add_device_arguments(build, default_device="cpu", default_dtype="float32")  # the bundled build: CPU fp32
    build.set_defaults(handler=run_build)


def run_generate(args: argparse.Namespace) -> int:
    from core.demo.world import WorldConfig, write_world

    if args.pairs < 1:
        raise DmtuiError(f"--pairs must be at least 1, not {args.pairs}")
    if args.noise < 0:
        raise DmtuiError(f"--noise must be 0 or more, not {args.noise}")
    if not 0 <= args.toxic_share <= 1:
        raise DmtuiError(f"--toxic-share must be between 0 and 1, not {args.toxic_share}")
    if args.bad_rows < 0:
        raise DmtuiError(f"--bad-rows must be 0 or more, not {args.bad_rows}")
    config = WorldConfig(args.pairs, args.noise, args.toxic_share, args.bad_rows, args.seed)
    try:
        out = write_world(args.out, config)
    except OSError as error:
        raise DmtuiError(f"cannot write {args.out}: {error.strerror}", hint="choose a writable folder with --out")
    print(f"wrote {config.n_pairs} pairs (+{config.bad_rows} bad rows) and their oracle to {out}")
    return 0


def build_config(args: argparse.Namespace):
    """The DemoModelsConfig of `dmtui demo build`'s options, with device and dtype resolved (auto: the GPU)."""
    from core.demo.models import DemoModelsConfig
    from core.models.load import pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = str(pick_dtype(device, args.dtype)).removeprefix("torch.")
    return DemoModelsConfig(cache_dir=args.cache, device=str(device), dtype=dtype)


def run_build(args: argparse.Namespace) -> int:
    from core.demo.models import ensure_demo_models

    config = build_config(args)
    with rich_progress() as progress:
        models = ensure_demo_models(config, progress=progress, force=args.force)
    if args.json:
        print(json.dumps(models.paths()))
    else:
        for name, path in models.paths().items():
            print(f"{name:<10} {path}")
        spearman = models.metrics.get("reward_oracle_spearman")
        if spearman is not None:
            print(f"reward model vs oracle margins: Spearman {spearman:.3f}")
    return 0
