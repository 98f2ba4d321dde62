"""The package's imports look down the layers only (DESIGN.md), and no module imports itself back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "facecvt"

# layer -> the layers its modules may import (function-level imports included)
ALLOWED = {
    "core": {"core"},
    "graph_ops": {"core", "graph_ops"},
    "samples": {"core", "graph_ops", "samples"},
    "convert": {"core", "graph_ops", "convert"},
    "validate": {"core", "graph_ops", "validate"},
    "pipeline": {"core", "validate", "pipeline"},  # the face pipeline: detector nets, alignment, face index
    "workflows": {"core", "graph_ops", "convert", "validate", "samples", "pipeline", "workflows"},
}
ROOT_MODULES = {"facecvt", "facecvt.cli", "facecvt.__main__"}
METADATA = "facecvt"  # the package root itself holds only __version__, which every layer may read


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set:
    """Every facecvt module `path` imports, at any depth of the file (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("facecvt"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("facecvt"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer(module: str) -> str:
    return module.split(".")[1]


def test_every_module_lives_in_a_layer():
    strays = [m for m in import_graph() if m not in ROOT_MODULES and layer(m) not in ALLOWED]
    assert not strays, f"modules outside the layers {sorted(ALLOWED)}: {strays}"


def test_imports_only_look_down():
    upward = [f"{m} imports {i}" for m, deps in import_graph().items() if m not in ROOT_MODULES
              for i in deps if i != METADATA and (i in ROOT_MODULES or layer(i) not in ALLOWED[layer(m)])]
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = import_graph()
    state, cycles = {}, []

    def visit(module, stack):
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The parser finds a lazy import inside a function (the kind that hid the old cycle)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from facecvt.validate.runners import runner_class\n")
    assert "facecvt.validate.runners" in imports_of(probe)
