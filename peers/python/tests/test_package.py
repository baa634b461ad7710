"""The package as installed: where it is imported from, what it exports,
how its modules are built (standard library only, no import circles, none
over about 800 lines), its py.typed marker, and its two ways to start the
command line."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys

from support import AT_RPC, REPO

import at_rpc

PACKAGE_DIR = os.path.dirname(at_rpc.__file__)
MODULES = sorted(m.name for m in pkgutil.iter_modules([PACKAGE_DIR]))
IMPORTABLE = [m for m in MODULES if m != "__main__"]  # that one runs the command line


def test_imported_from_the_installation_not_the_source_tree() -> None:
    source = os.path.join(REPO, "peers", "python", "src")
    assert not os.path.abspath(at_rpc.__file__).startswith(source + os.sep), at_rpc.__file__
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "py.typed"))


def test_every_public_name_is_exported_and_documented() -> None:
    assert len(at_rpc.__all__) == len(set(at_rpc.__all__))
    for name in at_rpc.__all__:
        value = getattr(at_rpc, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"
    for name in IMPORTABLE:
        module = importlib.import_module(f"at_rpc.{name}")
        assert module.__doc__, f"at_rpc.{name} has no docstring"
        for attr, value in vars(module).items():
            if attr.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), f"at_rpc.{name}.{attr} has no docstring"
                if inspect.isclass(value):
                    for method, member in vars(value).items():
                        if not method.startswith("_") and inspect.isfunction(member):
                            assert inspect.getdoc(member), f"{attr}.{method} has no docstring"


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(modules of this package, top-level outside modules) `name` imports."""
    with open(os.path.join(PACKAGE_DIR, f"{name}.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                inside.add(node.module or "__init__")
            else:
                outside.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Import):
            outside.update(alias.name.split(".")[0] for alias in node.names)
    return inside, outside


def test_standard_library_only_and_no_import_circles() -> None:
    graph = {}
    for name in MODULES:
        inside, outside = _imports(name)
        foreign = {m for m in outside if m not in sys.stdlib_module_names and m != "__future__"}
        assert not foreign, f"at_rpc.{name} imports {foreign}"
        graph[name] = inside - {"__init__"} if name != "__init__" else set()
    # Depth-first search for a cycle among the submodules.
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != "open", "import circle: " + " -> ".join([*path, nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_no_module_over_about_800_lines() -> None:
    for name in MODULES:
        with open(os.path.join(PACKAGE_DIR, f"{name}.py"), encoding="utf-8") as f:
            lines = f.read().count("\n")
        assert lines <= 820, f"at_rpc/{name}.py has {lines} lines"


def test_the_command_and_python_dash_m() -> None:
    for argv in ([AT_RPC, "--help"], [sys.executable, "-m", "at_rpc", "--help"]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r
        assert "serve [--tcp ADDR]" in r.stdout and "discover [" in r.stdout
    r = subprocess.run([AT_RPC, "call"], capture_output=True, text=True, timeout=20)
    assert (r.returncode, r.stderr.splitlines()[0]) == (2, "error: FUNC is missing")
    r = subprocess.run(
        [sys.executable, "-m", "at_rpc", "frobnicate"], capture_output=True, text=True, timeout=20
    )
    assert r.returncode == 2 and "usage: at_rpc.py serve" in r.stderr
