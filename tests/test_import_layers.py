"""The import contract: imports only go down the layers (core < submissions < competitions < commands).

Checked on the source (every ``import``, also those inside functions), so a lazy import cannot hide a
cycle. ``models/`` and ``features/`` are libraries beside the core: they may use ``pipelines.core`` only.
Inside one folder the modules form a ladder too: no two of them import each other, directly or round a
circle, lazy imports included (a function-level import only hides a circle until the function runs).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "models", "features", "submissions")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def statements(tree: ast.AST, package: str) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import anywhere in ``tree`` (functions included), relative ones made absolute
    from ``package``: ``import a.b`` is ``("a.b", [])``, ``from a import b, c`` is ``("a", ["b", "c"])``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names]))
    return found


@functools.cache
def statements_of(path: Path) -> list[tuple[str, list[str]]]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return statements(ast.parse(path.read_text(), filename=str(path)), package)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute; ``from a import b`` counts as ``a.b`` (b may be a module)."""
    return {name for base, names in statements_of(path) for name in (base, *(f"{base}.{n}" for n in names))}


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def competition_of(name: str) -> str | None:
    """``pipelines.competitions.<x>...`` -> ``x`` (``None``: not inside one competition)."""
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["pipelines", "competitions"] else None


def violations(name: str, imported: set[str]) -> list[str]:
    """The contract's rules for the module ``name``; one line per broken rule."""
    ours = sorted(i for i in imported if i.split(".")[0] in PACKAGES)
    bad = []
    for target in ours:
        if under(name, "pipelines.core") and not under(target, "pipelines.core"):
            bad.append(f"core imports {target}: core imports only core")
        elif under(name, "pipelines.competitions") and competition_of(name):
            other = competition_of(target)
            if under(target, "pipelines.commands") or target == "pipelines.__main__":
                bad.append(f"competition imports the command layer {target}")
            elif other and other != competition_of(name):
                bad.append(f"competition imports another competition, {target}")
            elif target == "pipelines.competitions":
                bad.append("competition imports the registry (pipelines.competitions)")
        elif under(name, "models") or under(name, "features"):
            if under(target, "pipelines") and not under(target, "pipelines.core"):
                bad.append(f"{name.split('.')[0]}/ imports {target}: only pipelines.core")
            if under(target, "submissions"):
                bad.append(f"{name.split('.')[0]}/ imports {target}")
        elif under(name, "submissions") and under(target, "pipelines") and not under(target, "pipelines.core"):
            bad.append(f"submissions imports {target}: validation and writing need only pipelines.core")
        if under(target, "pipelines.commands") and not (under(name, "pipelines.commands")
                                                        or name == "pipelines.__main__"):
            bad.append(f"imports the command {target}: commands sit on top, imported only by the CLI")
    return bad


SOURCES = sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_only_go_down_the_layers(path):
    assert violations(module_name(path), imports_of(path)) == []


@pytest.mark.parametrize(("name", "target", "broken"), [
    ("pipelines.core.tuning", "pipelines.competitions.leaves.pipeline", True),
    ("pipelines.core.tuning", "pipelines.commands.tune", True),
    ("pipelines.core.tuning", "submissions.writer", True),
    ("pipelines.competitions.leaves.objective", "pipelines.commands.tune", True),
    ("pipelines.competitions.leaves.pipeline", "pipelines.competitions.house_prices.pipeline", True),
    ("pipelines.competitions.leaves.pipeline", "pipelines.competitions", True),
    ("pipelines.competitions.leaves.pipeline", "pipelines.competitions.leaves.leafgen", False),
    ("pipelines.competitions.leaves.pipeline", "submissions.writer", False),
    ("models.pretrained", "pipelines.core.errors", False),
    ("models.pretrained", "pipelines.competitions.leaves.pipeline", True),
    ("features.house", "submissions.writer", True),
    ("submissions.writer", "pipelines.competitions.house_prices", True),
    ("submissions.writer", "pipelines.core.records", False),
    ("pipelines.commands.blend", "pipelines.commands.runs", False),
    ("pipelines.__main__", "pipelines.commands.tune", False),
])
def test_the_contract_catches_what_it_should(name, target, broken):
    assert bool(violations(name, {target})) == broken



# ------------------------------------------------------------------------------------- circles in a folder
def modules_imported(found: list[tuple[str, list[str]]], known: set[str]) -> set[str]:
    """The modules of ``known`` that these import statements load: ``from a import b`` is the module ``a.b``
    when there is one, else ``a`` (then ``b`` is a name in it); ``a.b.c`` not in ``known`` falls back to ``a.b``."""
    out = set()
    for base, names in found:
        for target in [f"{base}.{n}" if f"{base}.{n}" in known else base for n in names] or [base]:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                out.add(target)
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle ``[a, b, ..., a]`` per strongly connected group of ``graph`` (Tarjan), sorted; none: ``[]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(_walk_round(graph, set(group), group[0]) for group in groups)


def _walk_round(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """The shortest path from ``start`` back to itself inside ``group`` (breadth first)."""
    paths = [[start]]
    while paths:
        path = paths.pop(0)
        for nxt in sorted(graph[path[-1]] & group):
            if nxt == start:
                return [*path, start]
            if nxt not in path:
                paths.append([*path, nxt])
    raise AssertionError(f"no circle through {start}")


# Circles known and owned elsewhere (issue 24): each competition's __init__ (the registration) lazily imports its
# pipeline (leaves: its data module) for the spec checks, and the modules import COMPETITION back from the
# __init__. Strict: once one is gone, drop its line here.
KNOWN_CIRCLES = {
    "pipelines/competitions/house_prices": "house_prices/__init__ <-> pipeline (COMPETITION, stack_loss)",
    "pipelines/competitions/leaves": "leaves/__init__ <-> config, data, record (COMPETITION; its spec reads data)",
}
FOLDERS = [pytest.param(folder, id=f"{rel}/", marks=[pytest.mark.xfail(strict=True, reason=KNOWN_CIRCLES[rel])]
                        if rel in KNOWN_CIRCLES else [])
           for folder in sorted({p.parent for p in SOURCES}) for rel in [folder.relative_to(REPO).as_posix()]]


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_import_circle_inside_a_folder(folder):
    """Modules beside each other import each other one way only (lazy imports count: they only postpone it)."""
    files = {module_name(p): p for p in SOURCES if p.parent == folder}
    graph = {name: modules_imported(statements_of(path), set(files)) - {name} for name, path in files.items()}
    found = circles(graph)
    assert not found, f"import circle in {folder.relative_to(REPO)}/: " + "; ".join(" -> ".join(c) for c in found)


def test_the_circle_check_catches_lazy_imports():
    code = "import torch\n\ndef build():\n    from models.b import make\n    from . import c\n"
    found = statements(ast.parse(code), "models")
    assert modules_imported(found, {"models.a", "models.b", "models.c"}) == {"models.b", "models.c"}
    assert modules_imported([("models", ["create_model"])], {"models", "models.b"}) == {"models"}
    graph = {"m.a": {"m.b"}, "m.b": {"m.c"}, "m.c": {"m.a"}, "m.d": {"m.a"}, "m.e": {"m.f"}, "m.f": {"m.e"}}
    assert circles(graph) == [["m.a", "m.b", "m.c", "m.a"], ["m.e", "m.f", "m.e"]]
    assert circles({"m.a": {"m.b"}, "m.b": set(), "m.c": {"m.a", "m.b"}}) == []
