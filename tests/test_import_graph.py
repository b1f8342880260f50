"""No two-way imports between the packages of steph: if ``steph.a`` imports ``steph.b`` (at module
level or inside a function), ``steph.b`` imports nothing of ``steph.a``. A helper both need lives
in the package that owns it. The graph is read from the source (every ``import`` statement), so a
function-level import counts as much as a top-level one."""

from __future__ import annotations

import ast
from pathlib import Path

STEPH = Path(__file__).resolve().parent.parent / "steph"

KNOWN_TWO_WAY: dict[frozenset[str], str] = {}
"""Two-way imports not untangled yet, each with where it comes from. The list only shrinks: an
entry that is no longer two-way fails the test until it is removed here."""


FOUNDATIONS = ("steph.data", "steph.records", "steph.layout", "steph.errors", "steph.survival")
"""Packages every stage builds on: they import none of the stages' own packages (:data:`STAGE_WORK`)."""
STAGE_WORK = ("steph.training", "steph.merging", "steph.pipeline", "steph.stages", "steph.predict")


def _package(module: str) -> str:
    """``steph.X`` of a module ``steph.X.Y`` (a top-level module ``steph.X`` is its own)."""
    return ".".join(module.split(".")[:2])


def _imports(path: Path) -> set[str]:
    """Every steph module that ``path`` imports (relative imports resolved)."""
    parts = list(path.relative_to(STEPH.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names = (
                [target] + [f"{target}.{alias.name}" for alias in node.names]
                if node.module is None
                else [target]
            )
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "steph" or name.startswith("steph.")}


def package_graph() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the files that do it."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(STEPH.rglob("*.py")):
        module = ".".join(path.relative_to(STEPH.parent).with_suffix("").parts).removesuffix(".__init__")
        for target in _imports(path):
            a, b = _package(module), _package(target)
            if a != b and b != "steph":
                edges.setdefault((a, b), []).append(str(path.relative_to(STEPH.parent)))
    return edges


def two_way(edges: dict[tuple[str, str], list[str]]) -> dict[frozenset[str], str]:
    """Each pair of packages importing each other, with the files on both sides."""
    pairs: dict[frozenset[str], str] = {}
    for a, b in edges:
        if (b, a) in edges and frozenset({a, b}) not in pairs:
            pairs[frozenset({a, b})] = (
                f"{a} <- {sorted(set(edges[(a, b)]))}; {b} <- {sorted(set(edges[(b, a)]))}"
            )
    return pairs


def test_the_graph_sees_function_level_imports() -> None:
    edges = package_graph()
    # steph.hpc.status imports steph.stages inside a function only
    assert "steph/hpc/status.py" in edges[("steph.hpc", "steph.stages")]
    assert ("steph.stages", "steph.pipeline") in edges and ("steph.units", "steph.locks") in edges


def test_no_two_way_imports_between_packages() -> None:
    found = two_way(package_graph())
    new = {pair: where for pair, where in found.items() if pair not in KNOWN_TWO_WAY}
    assert not new, "packages that import each other (move the shared helper to its owner):\n" + "\n".join(
        new.values()
    )
    gone = [sorted(pair) for pair in KNOWN_TWO_WAY if pair not in found]
    assert not gone, f"no longer two-way, remove from KNOWN_TWO_WAY: {gone}"


def test_the_foundations_import_no_stage_work() -> None:
    edges = package_graph()
    found = {
        f"{a} -> {b}: {sorted(set(files))}"
        for (a, b), files in edges.items()
        if a in FOUNDATIONS and b in STAGE_WORK
    }
    assert not found, "a foundation package imports a stage's package (move the helper down):\n" + "\n".join(
        sorted(found)
    )
