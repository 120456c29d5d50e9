"""`dmtui serve` passes every option it accepts on to the `dmtui open` each browser tab runs."""

from __future__ import annotations

import argparse

import pytest

from dmtui.cli import build_parser
from dmtui.headless.common import add_dataset_arguments, load_config_from_args
from dmtui.headless.serve import app_command

LOADING_OPTIONS = add_dataset_arguments(argparse.ArgumentParser(add_help=False))
SAMPLE_VALUES = {"max_field_chars": "5000"}


def served_and_opened(options: list[str]) -> tuple[argparse.Namespace, argparse.Namespace]:
    served = build_parser().parse_args(["serve", "data.jsonl", *options])
    command = app_command(served)
    assert command[1:3] == ["-m", "dmtui"]
    return served, build_parser().parse_args(command[3:])


@pytest.mark.parametrize("option", LOADING_OPTIONS, ids=lambda option: option.option_strings[0])
def test_each_loading_option_reaches_the_app(option):
    words = [option.option_strings[0]] if option.nargs == 0 else [option.option_strings[0],
                                                                  SAMPLE_VALUES.get(option.dest, "sys")]
    served, opened = served_and_opened(words)
    assert getattr(opened, option.dest) == getattr(served, option.dest) not in (None, False)
    assert load_config_from_args(opened) == load_config_from_args(served)


def test_the_app_options_of_serve_reach_the_app():
    served, opened = served_and_opened(["--workspace", "ws.dmtui", "--demo-models",
                                        "--margin", "external=sc,sr", "--margin", "implicit=im"])
    assert opened.command == "open" and opened.data == "data.jsonl" and opened.workspace == "ws.dmtui"
    assert opened.demo_models and opened.margin == ["external=sc,sr", "implicit=im"]
