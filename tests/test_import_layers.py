"""The import contract: imports only go down the layers (core < submissions < competitions < commands).

Checked on the source (every ``import``, also those inside functions), so a lazy import cannot hide a
cycle. ``models/`` and ``features/`` are libraries beside the core: they may use ``pipelines.core`` only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "models", "features", "submissions")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute; ``from a import b`` counts as ``a.b`` (b may be a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


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

