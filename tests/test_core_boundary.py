"""`core` is the engine without a UI: importing any of it must not pull in Textual or Rich."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import core

FORBIDDEN = ("textual", "rich")

SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import core

    names = sorted(m.name for m in pkgutil.walk_packages(core.__path__, "core."))
    failed = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as error:  # reported, so a broken module cannot hide a leak
            failed[name] = f"{type(error).__name__}: {error}"
    leaked = sorted({m.split(".")[0] for m in sys.modules} & set(FORBIDDEN))
    print(json.dumps({"modules": names, "failed": failed, "leaked": leaked}))
    """
).replace("FORBIDDEN", repr(FORBIDDEN))


def test_core_never_imports_textual_or_rich():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # discovery works and covers the modules this test was written against
    assert {"core.data.loading", "core.data.sources", "core.store.workspace", "core.store.annotations",
            "core.data.pairs"} <= set(
        report["modules"]
    )
    assert report["failed"] == {}, report["failed"]
    assert report["leaked"] == [], f"core imports {report['leaked']}"


def test_the_check_can_fail():
    """The same script, with a UI library imported on purpose, does report the leak."""
    leaky = SCRIPT.replace("import core\n", "import core\nimport rich.console\n", 1)
    result = subprocess.run([sys.executable, "-c", leaky], capture_output=True, text=True, timeout=300)
    assert json.loads(result.stdout.strip().splitlines()[-1])["leaked"] == ["rich"]


def test_discovery_is_automatic():
    import pkgutil

    assert len(list(pkgutil.walk_packages(core.__path__, "core."))) >= 5


def test_the_app_and_the_cli_parser_do_not_import_torch():
    """torch (and transformers) take over a second to import: the app and `dmtui select` /
    `export` / `info` load them only for scoring or training, so they start at once."""
    script = ("import sys, dmtui.app, dmtui.cli; dmtui.cli.build_parser(); "
              "print(sorted({'torch', 'transformers', 'trl'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
