"""The core package imports as a tree, not a circle, and the built-in providers import
only the public API, as third-party ones must.

Read from the source with `ast`: every import counts, the ones inside functions too (a
function-level import that dodges a circle is still a circle); imports under
`if TYPE_CHECKING:` never run and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wa_gateway

PACKAGE = Path(wa_gateway.__file__).resolve().parent
NAME = PACKAGE.name


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str) -> set[str]:
    """The modules of the package that `module` imports when it runs."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def ours(target: str) -> None:
        while target and target not in MODULES:  # `from .x import name`: the module x
            target = target.rpartition(".")[0]
        if target and target != module:
            found.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == NAME:
                    ours(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.split(".")[0] == NAME:
                for alias in node.names:
                    ours(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            strong(node)
    return found


def test_core_modules_import_each_other_without_a_circle() -> None:
    graph = {module: imports_of(module) for module in MODULES}
    assert cycles(graph) == []


def test_commands_do_not_import_the_command_line() -> None:
    """cli imports everything; a module it reaches must not reach back."""
    importers = {module for module in MODULES if f"{NAME}.cli" in imports_of(module)}
    assert importers <= {f"{NAME}.__main__"}


def test_built_in_providers_import_only_the_public_api() -> None:
    providers = {module for module in MODULES if module.startswith(f"{NAME}.providers.")}
    assert providers
    for module in sorted(providers):
        internals = {
            imported for imported in imports_of(module)
            if imported != NAME and not imported.startswith(f"{NAME}.providers")
        }
        assert internals == set(), f"{module} imports internals: {sorted(internals)}"
