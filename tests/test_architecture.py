"""The package's structure: no import circle inside ``verl_gain/``, and what a verl worker process imports stays light.

verl imports the CPU plugin (``verl_gain.cpu.plugin``) in every process of every run, and the actor workers import
the GAIN worker; neither may pull in the demo's dependencies (matplotlib, gguf), nor megatron-core when no Megatron
engine is used (verl imports it itself whenever it is installed, which the CPU backend prevents in CPU runs).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "verl_gain"
HEAVY_OPTIONAL = ("matplotlib", "gguf")
LAYERS = (
    "core",
    "output_paths",
    "inference",
    "verl_version",
    "model_sources",
    "models",
    "scoring",
    "trainer",
    "cpu",
    "rewards",
    "tasks",
    "evaluation",
    "demo",
    "cli",
    "main",
)
"""The order of docs/architecture.md: a package (or top-level module) of verl_gain imports only earlier ones."""
SUBPROCESS_TIMEOUT_S = 300


def module_imports() -> dict[str, set[str]]:
    """``{module: the verl_gain modules it imports}``, imports inside functions included (they count as edges)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            # A module importing its own package's __init__ (or a parent package) is not a circle of its own.
            edges.update(t for t in targets if t in modules and t != name and not name.startswith(t + "."))
        graph[name] = edges
    return graph


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; components of more than one module are import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_circle_detector_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [c for c in strongly_connected_components(graph) if len(c) > 1] == [["a", "b", "c"]]


def test_no_import_circle_inside_the_package():
    graph = module_imports()
    assert "verl_gain.trainer.capture.fsdp" in graph and graph["verl_gain.cpu.backend"], "the import graph is empty"
    circles = [c for c in strongly_connected_components(graph) if len(c) > 1]
    assert circles == [], f"import circles: {circles}"


def test_every_dependency_points_down_the_layers():
    def layer(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    upward = sorted(
        (a, b)
        for a, targets in module_imports().items()
        for b in targets
        if layer(a) != layer(b) and LAYERS.index(layer(b)) > LAYERS.index(layer(a))
    )
    assert upward == [], f"imports against the layering of docs/architecture.md: {upward[:10]}"
    assert {layer(m) for m in module_imports()} - {"verl_gain"} == set(LAYERS)


def imported_in_fresh_process(code: str, env: dict[str, str] | None = None) -> list[str]:
    """The top-level packages loaded after running ``code`` in a fresh interpreter."""
    listing = "print('MODULES ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    script = f"{code}\nimport sys, json\n{listing}"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("MODULES "))
    return json.loads(line.removeprefix("MODULES "))


def test_a_cpu_worker_process_imports_neither_demo_dependencies_nor_megatron():
    from verl_gain.cpu.environment import WITHOUT_MEGATRON_ENV, worker_env_vars

    loaded = imported_in_fresh_process(
        "import verl, verl_gain, verl_gain.trainer.worker, verl_gain.trainer.trainers",
        env={**worker_env_vars(), WITHOUT_MEGATRON_ENV: "1"},
    )
    assert "verl_gain" in loaded and "verl" in loaded
    assert not set(loaded) & {*HEAVY_OPTIONAL, "megatron"}, set(loaded) & {*HEAVY_OPTIONAL, "megatron"}


def test_the_plugin_alone_stays_light_in_any_process():
    loaded = imported_in_fresh_process("import verl_gain.cpu.plugin")
    assert not set(loaded) & {*HEAVY_OPTIONAL, "megatron", "transformers"}


def test_the_former_model_module_name_still_works():
    from verl_gain.model_sources import resolve_model
    from verl_gain.models import resolve_model as former

    assert former is resolve_model
