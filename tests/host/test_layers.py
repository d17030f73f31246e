"""The package's floors: each module imports only from floors below it (or
its own floor's modules, without a circle), whether at the top of the file,
inside a function or under TYPE_CHECKING.  The floors are declared here,
once; a new module must be placed in one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "pyckpt"

# floor -> modules (dotted, without the "pyckpt." prefix); "kinds.*" is every
# module of kinds/, "tools.*" every module under tools/
FLOORS: list[tuple[str, set[str]]] = [
    (
        "floor",
        {
            "_ckpt",
            "abi",
            "errors",
            "proc",
            "model",
            "records",
            "device",
            "syscalls",
            "names",
            "stub",
            "sockdiag",
            "limits",
            "gcpause",
        },
    ),
    ("kinds", {"kinds.*"}),
    (
        "machinery",
        {
            "proctree",
            "freeze",
            "checkpointer",
            "image",
            "restarter",
            "show",
            "ls",
        },
    ),
    ("face", {"api", "cli", "__init__", "__main__"}),
    ("tools", {"tools.*"}),
]
# only the CLI's verbs may reach the tools (a verb runs one)
TOOLS_IMPORTERS = {"cli"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def floor_of(mod: str) -> int:
    for i, (_, mods) in enumerate(FLOORS):
        for m in mods:
            if m == mod or (m.endswith(".*") and mod.startswith(m[:-1])):
                return i
            if m.endswith(".*") and mod == m[:-2]:
                return i
    raise AssertionError(f"pyckpt.{mod}: on no floor (declare it in FLOORS)")


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, inside a function) for every pyckpt import."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path)
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("pyckpt."):
                        out.append((a.name[7:], child.lineno, inner))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against this package
                    pkg = me.split(".")[: -child.level or None]
                    base = ".".join([*pkg, base] if base else pkg)
                    base = "pyckpt." + base if base else "pyckpt"
                if base == "pyckpt":
                    # from pyckpt import x: x is a module or a name of __init__
                    for a in child.names:
                        sub = PKG / a.name
                        if sub.with_suffix(".py").exists() or sub.is_dir():
                            out.append((a.name, child.lineno, inner))
                        else:
                            out.append(("__init__", child.lineno, inner))
                elif base.startswith("pyckpt."):
                    mod = base[7:]
                    for a in child.names:
                        sub = PKG.joinpath(*mod.split("."), a.name)
                        if sub.with_suffix(".py").exists() or sub.is_dir():
                            out.append((f"{mod}.{a.name}", child.lineno, inner))
                        else:
                            out.append((mod, child.lineno, inner))
            visit(child, inner)

    visit(tree, False)
    return out


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    return {
        module_name(p): imports(p)
        for p in sorted(PKG.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def test_every_module_is_on_a_floor() -> None:
    for mod in graph():
        floor_of(mod)


def test_no_import_climbs_a_floor() -> None:
    climbs = []
    for mod, deps in graph().items():
        mine = floor_of(mod)
        for dep, line, _local in deps:
            theirs = floor_of(dep)
            if FLOORS[theirs][0] == "tools" and FLOORS[mine][0] != "tools":
                if mod not in TOOLS_IMPORTERS:
                    climbs.append(f"pyckpt/{mod}:{line} imports tools {dep}")
            elif theirs > mine:
                climbs.append(
                    f"pyckpt/{mod}:{line} ({FLOORS[mine][0]}) imports "
                    f"{dep} ({FLOORS[theirs][0]})"
                )
    assert not climbs, "\n".join(climbs)


def test_no_import_circle() -> None:
    # function-local imports count: they only hide a circle
    # a package importing its own submodules (kinds/__init__ is the registry)
    # is not a circle back from them
    g = {
        m: {d for d, _, _ in deps if d != m and not d.startswith(m + ".")}
        for m, deps in graph().items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                circles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                dfs(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            dfs(m)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("machinery", ["checkpointer", "image", "restarter", "show"])
def test_kinds_reach_only_their_contract(machinery: str) -> None:
    """No kind imports the machinery (their contract is kinds/base.py)."""
    for mod, deps in graph().items():
        if mod.startswith("kinds"):
            assert all(d != machinery for d, _, _ in deps), f"{mod} imports {machinery}"


def test_function_local_imports_are_few() -> None:
    """A function-local import of pyckpt is only for start-up time (the CLI
    loads a verb's modules when the verb runs), never to dodge a circle."""
    local = [
        f"pyckpt/{mod}:{line} {dep}"
        for mod, deps in graph().items()
        for dep, line, inner in deps
        if inner and mod not in {"cli", "__init__"} and not mod.startswith("tools")
    ]
    assert not local, "\n".join(local)
