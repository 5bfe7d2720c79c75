"""The package's shape, read from the sources (no server): one namespace mapped by setup.py, no
``sys.path`` edits, no import cycles, absolute imports only, every import declared as a dependency,
and a cheap ``import torchserve_perf`` / ``torchserve-perf --help`` (no torch, no side effects).

The installed package serving real archives is tests/test_wheel.py (a wheel in a fresh venv).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import REPO

# Folders whose Python files are ours (tests and scripts included for the sys.path rule).
SOURCE_DIRS = ("torchserve_perf", "handlers", "plugins", "models", "scripts", "tests")


def setup_literals() -> dict:
    """PACKAGE_DIR, install_requires and extras_require, read from setup.py without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    found: dict = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PACKAGE_DIR" for t in node.targets):
            found["package_dir"] = ast.literal_eval(node.value)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup":
            for kw in node.keywords:
                if kw.arg in ("install_requires", "extras_require"):
                    found[kw.arg] = ast.literal_eval(kw.value)
    return found


def package_modules() -> dict[str, Path]:
    """Module name -> file, for every module setup.py installs."""
    modules = {}
    for package, folder in setup_literals()["package_dir"].items():
        for path in sorted((REPO / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def python_files() -> Iterator[Path]:
    for folder in SOURCE_DIRS:
        yield from (p for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)
    yield REPO / "setup.py"


def _in_type_checking(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, modules: frozenset = frozenset()) -> Iterator[tuple[ast.AST, list[str], bool]]:
    """(node, imported modules, at module level) for each import outside ``if TYPE_CHECKING:``.

    ``from a.b import c`` imports ``a.b.c`` when that is one of ``modules``, else ``a.b``."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _in_type_checking(node, parents):
            continue
        top_level = parents.get(node) is tree
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names], top_level
        elif node.level == 0 and node.module:
            yield node, [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                         for alias in node.names], top_level
        else:
            yield node, [], top_level


# ---- the namespace --------------------------------------------------------------------------------
def test_setup_maps_every_package_into_one_namespace() -> None:
    package_dir = setup_literals()["package_dir"]
    assert all(name == "torchserve_perf" or name.startswith("torchserve_perf.") for name in package_dir)
    # every folder with an __init__.py under a mapped folder is itself mapped (none left out of the wheel)
    mapped = {(REPO / folder).resolve() for folder in package_dir.values()}
    for folder in package_dir.values():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                assert init.parent.resolve() in mapped, f"{init.parent} is a package setup.py does not map"


def test_no_sys_path_edits_anywhere() -> None:
    """No sys.path.insert/append/..., no assignment to sys.path, no site.addsitedir."""
    offenders = []
    for path in python_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            text = ast.unparse(node) if isinstance(node, (ast.Call, ast.Assign, ast.AugAssign)) else ""
            if isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                if re.fullmatch(r"sys\.path\.\w+", func) and not func.endswith((".index", ".count", ".copy")):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {text}")
                if func in ("site.addsitedir",):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {text}")
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(ast.unparse(t).startswith("sys.path") for t in targets):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {text}")
    assert not offenders, "\n".join(offenders)


def test_the_sys_path_rule_can_fail(tmp_path: Path) -> None:
    """The check above finds an edit when there is one (guards against a check that never fires)."""
    tree = ast.parse("import sys\nsys.path.insert(0, 'x')\nsys.path += ['y']\n")
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    augs = [n for n in ast.walk(tree) if isinstance(n, ast.AugAssign)]
    assert calls == ["sys.path.insert"] and ast.unparse(augs[0].target) == "sys.path"


def test_imports_are_absolute() -> None:
    relative = [f"{path.relative_to(REPO)}:{node.lineno}" for path in package_modules().values()
                for node, _, _ in imports_of(path) if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative, f"relative imports (use from torchserve_perf.... import ...): {relative}"


# ---- import cycles ----------------------------------------------------------------------------------
def import_graph() -> dict[str, set[str]]:
    """Module -> the torchserve_perf modules it imports anywhere (function bodies too, not TYPE_CHECKING)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for _, dotted, _ in imports_of(path, frozenset(modules)):
            for target in dotted:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as a path [a, b, ..., a], or [] (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return []


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_our_modules() -> None:
    graph = import_graph()
    assert len(graph) > 40 and graph["torchserve_perf.tools.bench"], "the graph is empty: the scan is broken"
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


# ---- dependencies -----------------------------------------------------------------------------------
def _normalise(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_import_is_a_declared_dependency() -> None:
    """What a worker imports at module level (handlers, plugins, models) needs install_requires; the tools
    and fixtures may also use the ``tools`` extra; a lazy import may come from any extra; a package not
    installed here (ipex, TensorRT, ...) may only be imported lazily (inside a function or a try)."""
    import importlib.metadata as metadata

    literals = setup_literals()
    required = {_normalise(r) for r in literals["install_requires"]}
    extras = {_normalise(r) for reqs in literals["extras_require"].values() for r in reqs}
    tools = {_normalise(r) for r in literals["extras_require"]["tools"]}
    distributions = metadata.packages_distributions()
    problems = []
    for module, path in package_modules().items():
        for node, dotted, top_level in imports_of(path):
            if not dotted:
                continue
            top = dotted[0].split(".")[0]
            if top in sys.stdlib_module_names or top == "torchserve_perf" or top == "__future__":
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno} imports {top}"
            names = {d.lower().replace("_", "-") for d in distributions.get(top, [])}
            if not names:
                if top_level:
                    problems.append(f"{where} at module level, but no installed distribution provides it")
                continue
            tool_side = module.startswith(("torchserve_perf.tools", "torchserve_perf.fixtures"))
            if top_level and not names & (required | (tools if tool_side else set())):
                problems.append(f"{where} at module level: add {sorted(names)[0]} to install_requires"
                                + (" or the tools extra" if tool_side else ""))
            elif not names & (required | extras):
                problems.append(f"{where}: add {sorted(names)[0]} to install_requires or an extra")
    assert not problems, "\n".join(problems)


# ---- cheap, side-effect-free imports ---------------------------------------------------------------
def test_importing_the_package_and_the_cli_loads_no_torch(tmp_path: Path) -> None:
    code = ("import sys, torchserve_perf, torchserve_perf.cli, torchserve_perf.tools, "
            "torchserve_perf.tools.argparsing, torchserve_perf.tools.paths\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'ts', 'requests', 'yaml', 'matplotlib') if m in sys.modules)\n"
            "print(','.join(heavy) or 'none')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none" and done.stderr == "", done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == [], "importing wrote files into the current directory"


def test_top_level_help_loads_no_torch(tmp_path: Path) -> None:
    code = "import sys\nfrom torchserve_perf.cli import main\nmain(['--help'])\nprint('torch' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().endswith("False"), done.stdout + done.stderr


@pytest.mark.parametrize("module", ["torchserve_perf.handlers", "torchserve_perf.plugins",
                                    "torchserve_perf.tools.archive", "torchserve_perf.tools.bench"])
def test_importing_a_module_has_no_side_effects(module: str, tmp_path: Path) -> None:
    code = f"import {module}\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", done.stdout
    assert list(tmp_path.iterdir()) == [], "importing wrote files into the current directory"
