"""One namespace: the kernel and the plugins install as aiosh.kernel and aiosh.plugins, built-ins come through the
same `aiosh.plugins` entry points as third parties', and the import contracts hold (plugins import only aiosh.api)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

from aiosh.kernel.entrypoints import builtin_entry_points
from aiosh.kernel.plugins import discover
from aiosh.kernel.scheduler import available_policies

ROOT = Path(__file__).resolve().parents[1]


def test_no_generic_top_level_package_outside_the_checkout(tmp_path):
    code = ("import importlib.util, sys; "
            "print([n for n in ('kernel', 'plugins') if importlib.util.find_spec(n)]); "
            "import aiosh.kernel, aiosh.plugins.agents")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_builtins_are_registered_as_entry_points():
    names = {ep.name for ep in builtin_entry_points()}
    assert {"agents.chat", "tools.files", "policies.fair"} <= names
    found = discover()
    assert found.origins["chat"] == "aiosh.plugins.agents.chat"
    assert found.tool_origins["read_file"] == "aiosh.plugins.tools.files"
    assert {"fair", "fifo", "priority", "rr", "serial"} <= set(available_policies())


def test_the_kernel_names_no_plugin_module():
    for path in (ROOT / "kernel").glob("*.py"):
        assert "plugins." not in "".join(
            node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.startswith(("plugins.", "aiosh.plugins."))
        ), path


def _installed_layout(root: Path) -> Path:
    """aiosh, aiosh.kernel and aiosh.plugins laid out as installed (links to the checkout's files): the static
    tools cannot follow setuptools' package-dir mapping of the checkout (.ci/typecheck builds the same tree)."""
    def link(src: str, dst: str) -> None:
        os.symlink(src, dst)

    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "aiosh", root / "aiosh", copy_function=link, ignore=ignore)
    shutil.copytree(ROOT / "kernel", root / "aiosh" / "kernel", copy_function=link, ignore=ignore)
    shutil.copytree(ROOT / "plugins", root / "aiosh" / "plugins", copy_function=link, ignore=ignore)
    return root


def test_import_contracts(tmp_path):
    """The layering (aiosh → kernel ← plugins; plugins import only aiosh.api; the shell library no terminal
    library), declared once as import-linter contracts in pyproject.toml."""
    tree = _installed_layout(tmp_path)
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "lint-imports (import-linter, in the [test] extra) is not installed"
    r = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree,
                       env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def _kernel_import_graph() -> dict[str, set[str]]:
    """Module → the kernel modules it imports (relative imports, type-checking and function-level ones too: a
    circle drawn only for the type checker is a circle for the reader as well)."""
    folder = ROOT / "kernel"
    modules = {".".join(p.relative_to(folder).with_suffix("").parts).removesuffix(".__init__").removesuffix(
        "__init__"): p for p in folder.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        package = [p for p in package if p]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package[: len(package) - (node.level - 1)]
            targets = [".".join([*base, *node.module.split(".")])] if node.module else []
            targets += [".".join([*base, *(node.module.split(".") if node.module else []), a.name])
                        for a in node.names]
            deps.update(t for t in targets if t in modules and t != name)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_kernel_has_no_import_circles():
    graph = _kernel_import_graph()
    assert {"agent", "kernel", "services", "tools.manager" if "tools.manager" in graph else "tools"} <= set(graph)
    assert _cycles(graph) == []


def test_agents_and_managers_never_hold_the_kernel():
    """The context and the managers reach the kernel through kernel/services.py, never the Kernel class."""
    graph = _kernel_import_graph()
    for name, deps in graph.items():
        if name not in ("kernel", ""):
            assert "kernel" not in deps, f"kernel/{name}.py imports kernel.py"
    assert graph["services"] <= {"proc", "requests"}  # a leaf: the records only
