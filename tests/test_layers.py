"""core/'s layer rules: no import cycles, an order of layers, the demo kept out of the engine,
selection free of torch, no UI library.

The import graph is read from the source (every `import`, also those inside functions and
under `if TYPE_CHECKING:`), so a rule holds for code paths no test runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"

LAYERS = ["io", "data", "store", "models", "selection", "export", "curation", "training", "scoring",
          "generation", "online", "demo"]
"""A module may import only from its own or earlier layers (the top-level modules errors,
progress and defaults come before all). This is the dependency order; the README lists the
pipeline order, which differs in two places: selection (numpy only) comes before scoring,
which takes its margin source names from it, and training comes before scoring, whose
seed policy pi_1 is trained by core.training."""

TOP_LEVEL = {"core", "core.errors", "core.progress", "core.defaults"}
DEMO_IN_ENGINE: dict[tuple[str, str], str] = {}
"""The engine's known uses of the demo, each with why; nothing else outside core/demo may import it.
None now: the last, core.online.iteration's demo prompts and oracle, are given by its caller
(dmtui iterate). A listed use that is gone fails the test, so the list cannot go stale."""
KNOWN_CYCLES: list[list[str]] = []
"""Cycles left to break, each with why (none now: the last, core.scoring.run <-> seed_policy, was
broken by moving ScoringConfig into core.scoring.config). A listed cycle that no longer holds fails
the test, so the list cannot go stale."""
UI_LIBRARIES = ("textual", "rich", "dmtui")
TORCH_FREE = ("core.selection", "core.io", "core.data", "core.store", "core.export", "core.curation")
"""Packages whose every module must import without torch or transformers."""


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(CORE.rglob("*.py"))}


def imported_names(tree: ast.AST) -> set[str]:
    """Every module name an `import` in the tree names ("core.a.b", "core.a" + each imported name)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Module -> the core modules it imports (a name that is a module, not an attribute)."""
    modules = modules or core_modules()
    graph = {}
    for name, path in modules.items():
        found = imported_names(ast.parse(path.read_text("utf-8")))
        graph[name] = {other for other in found if other in modules and other != name}
        graph[name] |= {n.split(".")[0] for n in found if n.split(".")[0] in UI_LIBRARIES}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in graph:
                continue
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    if module in TOP_LEVEL:
        return -1
    return LAYERS.index(module.split(".")[1])


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a later layer; the demo (last) has its own rule, `demo_uses`."""
    return sorted(f"{module} ({module.split('.')[1]}) imports {other} ({other.split('.')[1]})"
                  for module, imports in graph.items() for other in imports
                  if other.startswith("core") and not other.startswith("core.demo")
                  and layer_of(other) > layer_of(module))


def demo_uses(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(module, other) for module, imports in graph.items() for other in imports
            if other.startswith("core.demo") and not module.startswith("core.demo")}


def ui_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} imports {other}" for module, imports in graph.items() for other in imports
                  if other in UI_LIBRARIES)


def test_every_module_sits_in_a_layer():
    unplaced = [m for m in core_modules() if m not in TOP_LEVEL and
                (m.count(".") < 1 or m.split(".")[1] not in LAYERS)]
    assert unplaced == [], f"modules outside every layer (add them to a subpackage): {unplaced}"
    assert {name for name in LAYERS} <= {m.split(".")[1] for m in core_modules() if m.count(".") >= 1}


def test_core_has_no_import_cycles():
    found = cycles(import_graph())
    assert [c for c in found if c not in KNOWN_CYCLES] == []
    assert [c for c in KNOWN_CYCLES if c not in found] == [], "a known cycle is gone: drop it from KNOWN_CYCLES"


def test_each_module_imports_only_its_own_or_earlier_layers():
    assert layer_violations(import_graph()) == []


def test_the_engine_never_imports_the_demo():
    uses = demo_uses(import_graph())
    assert uses <= set(DEMO_IN_ENGINE), f"new engine imports of core.demo: {sorted(uses - set(DEMO_IN_ENGINE))}"
    assert uses == set(DEMO_IN_ENGINE), f"listed uses that are gone (drop them): {set(DEMO_IN_ENGINE) - uses}"


def test_core_never_imports_a_ui_library():
    assert ui_imports(import_graph()) == []


def test_the_checks_can_fail():
    """The same checks on a graph with a cycle, an upward import, a demo use and a UI import."""
    graph = {
        "core.data.pairs": {"core.data.loading", "core.scoring.run", "core.demo.world", "rich"},
        "core.data.loading": {"core.data.pairs"},
        "core.scoring.run": set(),
        "core.demo.world": set(),
    }
    assert cycles(graph) == [["core.data.loading", "core.data.pairs"]]
    assert layer_violations(graph) == ["core.data.pairs (data) imports core.scoring.run (scoring)"]
    assert demo_uses(graph) == {("core.data.pairs", "core.demo.world")}
    assert ui_imports(graph) == ["core.data.pairs imports rich"]


TORCH_CHECK = """
import importlib, json, pkgutil, sys
names = []
for package in PACKAGES:
    module = importlib.import_module(package)
    names.append(package)
    names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
for name in names:
    importlib.import_module(name)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers"})
print(json.dumps({"modules": names, "heavy": heavy}))
"""


def torch_check(packages: tuple[str, ...]) -> dict:
    script = TORCH_CHECK.replace("PACKAGES", repr(packages))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=CORE.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_selection_and_the_light_layers_import_no_torch():
    report = torch_check(TORCH_FREE)
    assert "core.selection.selector" in report["modules"] and "core.data.loading" in report["modules"]
    assert report["heavy"] == []


def test_the_torch_check_can_fail():
    """The same check over a package that does load torch reports it."""
    assert "torch" in torch_check(("core.selection", "core.models"))["heavy"]
