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


def _module_name(path: Path) -> str:
    parts = ["fdflare", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_only(tree: ast.AST) -> set[ast.AST]:
    """The nodes under ``if TYPE_CHECKING:``: imports for annotations, never run."""
    skip: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip |= set(ast.walk(child))
    return skip


def _import_graph() -> dict[str, set[str]]:
    """Module -> the fdflare modules it imports when run (at the top or inside functions)."""
    names = {_module_name(p): p for p in _modules()}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        targets: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_only(tree)
        for node in ast.walk(tree):
            if node in skip:
                continue
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from fdflare.x import y` imports the module fdflare.x.y where there is one
                subs = {f"{node.module}.{a.name}" for a in node.names}
                found = subs & names.keys()
                targets |= found or {node.module}
                if len(found) < len(subs):
                    targets.add(node.module)
        graph[name] = {t for t in targets if t in names and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_a_cycle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_two_modules_import_each_other():
    cycles = _cycles(_import_graph())
    assert not cycles, "modules that import each other (directly or through others): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )
