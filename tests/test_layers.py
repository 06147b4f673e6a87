"""The package's layers point one way: no module imports a higher layer, and no imports go round in a circle.

Imports are read from the source (every import statement, in functions too), as the pipeline's
``sources`` stage reads them.
"""

import ast
from pathlib import Path

import pytest

from stfusion.pipeline.sources import closure, imported_modules, package_folder

# Bottom to top: data flows from raw files to the report; each layer may use the ones below it.
LAYERS = ["ground", "data", "methods", "inference", "train", "evaluation", "reporting", "pipeline", "rehearsal",
          "cli"]
GROUND = {"stfusion", "stfusion.errors", "stfusion.io", "stfusion.paths", "stfusion.provenance", "stfusion.units"}


def modules() -> dict[str, Path]:
    found = {}
    package = package_folder()
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer(module: str) -> int:
    if module in GROUND:
        return 0
    return LAYERS.index(module.split(".")[1])


def imports() -> dict[str, set[str]]:
    return {name: imported_modules(path.read_text(), filename=str(path)) for name, path in modules().items()}


def test_every_module_has_a_layer():
    assert all(layer(name) >= 0 for name in modules())


def test_no_module_imports_a_higher_layer():
    upward = [f"{source} ({LAYERS[layer(source)]}) imports {target} ({LAYERS[layer(target)]})"
              for source, targets in imports().items() for target in targets if layer(target) > layer(source)]
    assert not upward, "\n".join(upward)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports, if there is any (depth-first search)."""
    state, stack = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    graph = {source: {t for t in targets if t != source} for source, targets in imports().items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_an_upward_import_is_seen(tmp_path):
    source = "def f():\n    from stfusion.reporting.plots import figures_study\n"
    assert "stfusion.reporting.plots" in imported_modules(source)


def _third_party(module: str) -> set[str]:
    tree = ast.parse(modules()[module].read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("entry", ["stfusion.inference.fuse", "stfusion.inference.predict"])
def test_inference_runs_without_training_code(entry):
    code = closure([entry])
    assert not [m for m in code if m.startswith("stfusion.train")]
    assert not [m for m in code if {"lightning", "pytorch_lightning"} & _third_party(m)]
