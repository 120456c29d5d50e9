"""The device and dtype options every command that runs a model takes (score, iterate, eval, demo build)."""

from __future__ import annotations

import argparse

DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_device_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, default_device: str = "auto",
                         default_dtype: str = "auto") -> None:
    """--device and --dtype, with the same meaning everywhere (core.models.load.pick_device / pick_dtype)."""
    parser.add_argument("--device", metavar="D", default=default_device,
                        help=f"auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default: {default_device})")
    parser.add_argument("--dtype", metavar="T", default=default_dtype, choices=DTYPES,
                        help="auto (bfloat16 on cuda, float16 where bf16 is not supported, float32 elsewhere), "
                        f"float32, bfloat16 or float16 (default: {default_dtype})")
