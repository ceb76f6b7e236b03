"""The layout's promise: imports run one way, down, and no two modules import each other.

Layers, top to bottom: `cli` → `projections` → `ledger.app` → `ledger.store` → `ledger.domain`
(with `ledger.events`, the recorded contract, beside the domain). Imports needed only for type
hints (under `if TYPE_CHECKING:`) do not count: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ledger", "projections", "cli")

LAYERS = ["ledger.domain", "ledger.events", "ledger.store", "ledger.app", "ledger",
          "projections", "cli"]
"""Bottom first; a module may import its own layer and those before it in this list, except
that the domain and the recorded contract import each other's modules (events name the
domain's quantities, aggregates apply events) and nothing else."""

ALLOWED: dict[str, set[str]] = {
    "ledger.domain": {"ledger.domain", "ledger.events"},
    "ledger.events": {"ledger.domain", "ledger.events"},
    "ledger.store": {"ledger.domain", "ledger.events", "ledger.store"},
    "ledger.app": {"ledger.domain", "ledger.events", "ledger.store", "ledger.app"},
    "ledger": {"ledger.domain", "ledger.events", "ledger.store", "ledger.app", "ledger"},
    "projections": {"ledger.domain", "ledger.events", "ledger.store", "ledger.app",
                    "ledger", "projections"},
    "cli": {"ledger.domain", "ledger.events", "ledger.store", "ledger.app", "ledger",
            "projections", "cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports when it runs (anywhere in it, functions included)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and _is_type_checking(node) for n in ast.walk(node)}
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            # `from package import module` imports the module (and runs the package's
            # __init__, which is the package's own business); `from module import name`
            # imports the module.
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            found.update(submodules or {base})
    return {name for name in found if name in known and name != this}


def layer_of(module: str) -> str:
    return max((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")),
               key=len)


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: runtime_imports(path, set(found)) for name, path in found.items()}


def test_every_import_goes_down_the_layers() -> None:
    upward = [f"{module} imports {imported}"
              for module, imported_set in import_graph().items()
              for imported in sorted(imported_set)
              if layer_of(imported) not in ALLOWED[layer_of(module)]]
    assert upward == []


def test_no_two_modules_import_each_other_at_run_time() -> None:
    graph = import_graph()
    # A package's __init__ re-exporting its modules is not a cycle with them.
    edges = {module: {i for i in imported if not module.startswith(i + ".")}
             for module, imported in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for imported in sorted(edges[module]):
            if state.get(imported) == 1:
                cycles.append([*stack[stack.index(imported):], imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize(("module", "imported"), [
    ("ledger.domain.stock_item", "ledger.store.application"),
    ("ledger.store.application", "ledger.app.service"),
    ("ledger.app.service", "projections.runner"),
])
def test_the_layer_check_sees_an_upward_import(module: str, imported: str) -> None:
    assert layer_of(imported) not in ALLOWED[layer_of(module)]
