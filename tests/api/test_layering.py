"""The tree is the architecture: import direction is enforced, not hoped for.

``cli → runtime → (api | worker)``; ``api → service → store``; nothing imports ``api`` but the runtime's API
state and the CLI; the API process never imports a worker, a predictor implementation or torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fluxserve

SRC = Path(fluxserve.__file__).parent
#: Modules an API process must never load: the worker side, the process wiring, and the heavy predictors.
API_FORBIDDEN = (
    "fluxserve.worker",
    "fluxserve.runtime",
    "fluxserve.service.housekeeping",
    "fluxserve.events.pgnotify",
    "fluxserve.predictors.base",
    "fluxserve.predictors.flux_base",
    "fluxserve.predictors.loading",
    "fluxserve.predictors.go_fast",
    "fluxserve.predictors.flux_",
    "fluxserve.predictors.tiny",
    "fluxserve.predictors.fixtures",
    "fluxserve.gateway.predictor",
)


def test_importing_the_api_loads_no_worker_predictor_or_torch() -> None:
    code = (
        "import sys, fluxserve.api.app; "
        "print('\\n'.join(m for m in sys.modules if m.startswith(('fluxserve', 'torch', 'diffusers'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "fluxserve.api.app" in loaded
    offending = [m for m in loaded if m.startswith(API_FORBIDDEN) or m.split(".")[0] in ("torch", "diffusers")]
    assert offending == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """fluxserve modules ``path`` imports, at module level or inside functions (a function-level import is a
    circle deferred, not removed); TYPE_CHECKING blocks never run, so they do not count."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fluxserve"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("fluxserve"))
        todo.extend(ast.iter_child_nodes(node))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py") if "migrations" not in p.parts}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_circles() -> None:
    graph = _graph()
    edges = graph["fluxserve.api.app"] | graph["fluxserve.api.state"]
    assert {"fluxserve.api.state", "fluxserve.service.predictions"} <= edges
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_the_runtime_and_the_cli_import_the_api() -> None:
    graph = _graph()
    importers = sorted(m for m, deps in graph.items() if any(d.startswith("fluxserve.api") for d in deps))
    outside = [m for m in importers if not m.startswith(("fluxserve.api", "fluxserve.cli"))]
    assert outside == ["fluxserve.runtime"]
