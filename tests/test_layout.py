"""The package is laid out by pipeline stage, and imports run one way, down the stages.

A module may import fdflare modules of its own stage or of earlier ones, never of a later
stage (imports inside functions count too). ``docs/architecture.md`` draws the same order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fdflare

PACKAGE = Path(fdflare.__file__).parent

# the stages in the order data flows; a module's stage is its first name under fdflare/
STAGES = (
    ("core",),
    ("acquire",),
    ("prepare",),
    ("synth",),  # stands in for acquire: writes the archive's JP2 format through prepare.jp2
    ("label", "splits"),
    ("data",),
    ("models",),
    ("training",),
    ("inference",),
    ("analysis",),
    ("forecast",),  # operational: acquire -> prepare -> inference -> calibration (-> explain)
    ("serve",),  # the service: scheduler, flare list, API, dashboard, replay
    ("reports",),
    ("bench",),  # measures every stage against the study's way
    ("commands",),
    ("cli", "__main__"),
)
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}
MAX_LINES = 650


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _stage(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "fdflare" or len(parts) == 1:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "fdflare":
                found += [(node.lineno, f"fdflare.{a.name}") for a in node.names]
    return found


def test_every_module_belongs_to_a_stage():
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if rel.as_posix() == "__init__.py":
            continue
        stage = rel.parts[0].removesuffix(".py")
        assert stage in RANK, f"{rel}: not under a known stage {sorted(RANK)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_imports_run_down_the_stages(path):
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0].removesuffix(".py")
    if own not in RANK:
        return
    for lineno, module in _imports(path):
        stage = _stage(module)
        if stage is None or stage not in RANK:
            continue
        assert RANK[stage] <= RANK[own], (
            f"{rel}:{lineno} imports {module}: stage '{own}' may not import the later stage '{stage}'"
        )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_is_a_junk_drawer(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, (
        f"{path.relative_to(PACKAGE)} has {lines} lines (at most {MAX_LINES})"
    )
