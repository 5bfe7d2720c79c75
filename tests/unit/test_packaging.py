"""The package's shape, read from the sources (no server): setup.py installs exactly the physical
``torchserve_perf`` tree, the root's ``handlers`` and ``plugins`` are links into it, nothing edits
``sys.path``, and every import is a declared dependency.

Import cycles, the layering between handlers, plugins and tools, relative imports and unsafe calls
are static checks in ``make lint`` (import-linter and ruff, configured in pyproject.toml). Cheap,
side-effect-free imports are tests/integration/test_packaging.py; the installed wheel serving real
archives is tests/e2e/test_wheel.py.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from setuptools import find_packages

from tests.conftest import REPO

PACKAGE = REPO / "torchserve_perf"
# Folders whose Python files are ours (tests and scripts included for the sys.path rule).
SOURCE_DIRS = ("torchserve_perf", "scripts", "tests")


def setup_literals() -> dict[str, Any]:
    """install_requires, extras_require, package_data and find_packages' include, read from setup.py unrun."""
    tree = ast.parse((REPO / "setup.py").read_text())
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup":
            for kw in node.keywords:
                if kw.arg in ("install_requires", "extras_require", "package_data"):
                    found[kw.arg] = ast.literal_eval(kw.value)
                if kw.arg == "packages":
                    assert isinstance(kw.value, ast.Call) and getattr(kw.value.func, "id", "") == "find_packages", \
                        "setup.py's packages= is expected to be find_packages(include=[...])"
                    include = [k.value for k in kw.value.keywords if k.arg == "include"]
                    found["include"] = ast.literal_eval(include[0])
    return found


def package_modules() -> dict[str, Path]:
    """Module name -> file, for every module under torchserve_perf/ (what the wheel installs)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def python_files() -> Iterator[Path]:
    for folder in SOURCE_DIRS:
        yield from (p for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)
    yield REPO / "setup.py"


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path) -> Iterator[tuple[ast.stmt, str, bool]]:
    """(node, top-level package imported, at module level) for each absolute import outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _in_type_checking(node, parents):
            continue
        top_level = parents.get(node) is tree
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name.split(".")[0], top_level
        elif node.level == 0 and node.module:
            yield node, node.module.split(".")[0], top_level


# ---- the namespace --------------------------------------------------------------------------------
def test_setup_installs_exactly_the_package_tree() -> None:
    """Every folder with an __init__.py under torchserve_perf/ is installed, and nothing else is."""
    installed = set(find_packages(where=str(REPO), include=setup_literals()["include"]))
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in PACKAGE.rglob("__init__.py")
               if "__pycache__" not in init.parts}
    assert installed == on_disk, f"installed but not on disk: {installed - on_disk}; left out: {on_disk - installed}"
    assert all(name == "torchserve_perf" or name.startswith("torchserve_perf.") for name in installed)
    # The root links are packages too as far as a walk of the checkout can tell; the include keeps them out.
    everything = set(find_packages(where=str(REPO)))
    assert {"handlers", "plugins"} <= everything and not {"handlers", "plugins"} & installed


@pytest.mark.parametrize("link", ["handlers", "plugins"])
def test_root_folders_are_links_into_the_package(link: str) -> None:
    path = REPO / link
    assert path.is_symlink(), f"{link} at the root should be a symbolic link into torchserve_perf/"
    assert path.resolve() == (PACKAGE / link).resolve()


def test_package_data_covers_every_data_file() -> None:
    """Each non-Python file under torchserve_perf/ (metrics.yaml, ...) matches a package_data glob of its package."""
    package_data = setup_literals()["package_data"]
    data_files = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
                  and "__pycache__" not in p.parts]
    assert data_files, "no data files found: the scan is broken (metrics.yaml is one)"
    for path in data_files:
        folder = path.parent
        while not (folder / "__init__.py").is_file():
            folder = folder.parent
        package = ".".join(folder.relative_to(REPO).parts)
        relative = path.relative_to(folder).as_posix()
        assert any(fnmatch.fnmatch(relative, glob) for glob in package_data.get(package, [])), \
            f"{path.relative_to(REPO)} is not in setup.py's package_data, so the wheel leaves it out"


# ---- no sys.path edits ----------------------------------------------------------------------------
def sys_path_edits(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, code) of each sys.path.insert/append/..., assignment to sys.path and site.addsitedir."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            mutates = re.fullmatch(r"sys\.path\.\w+", func) and not func.endswith((".index", ".count", ".copy"))
            if mutates or func == "site.addsitedir":
                found.append((node.lineno, ast.unparse(node)))
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(ast.unparse(t).startswith("sys.path") for t in targets):
                found.append((node.lineno, ast.unparse(node)))
    return found


@pytest.mark.parametrize("code,edits", [
    ("import sys\nsys.path.insert(0, 'x')\n", [(2, "sys.path.insert(0, 'x')")]),
    ("import sys\nsys.path.append('x')\n", [(2, "sys.path.append('x')")]),
    ("import sys\nsys.path += ['y']\n", [(2, "sys.path += ['y']")]),
    ("import sys\nsys.path = ['y']\n", [(2, "sys.path = ['y']")]),
    ("import site\nsite.addsitedir('z')\n", [(2, "site.addsitedir('z')")]),
    ("import sys\nn = sys.path.index('x') + sys.path.count('x')\nc = sys.path.copy()\n", []),
    ("import sys\nprint(sys.path)\n", []),
])
def test_sys_path_edits_are_found(code: str, edits: list[tuple[int, str]]) -> None:
    assert sys_path_edits(ast.parse(code)) == edits


def test_no_sys_path_edits_anywhere() -> None:
    offenders = [f"{path.relative_to(REPO)}:{line}: {code}"
                 for path in python_files() for line, code in sys_path_edits(ast.parse(path.read_text(), str(path)))]
    assert not offenders, "\n".join(offenders)


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
    modules = package_modules()
    assert len(modules) > 40 and "torchserve_perf.handlers.base" in modules, "the module scan is broken"
    problems = []
    for module, path in modules.items():
        for node, top, top_level in imports_of(path):
            if top in sys.stdlib_module_names or top in ("torchserve_perf", "__future__"):
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
