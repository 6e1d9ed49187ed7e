"""rewarm's own import graph, read from its source (an AST pass, function-local imports included):
what a module needs, transitively, and the files that holds. The layering test checks the graph;
`rewarm.dvcfile` makes each DVC stage depend on exactly the code its command runs."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
"""The package's directory (src/rewarm)."""


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """`rewarm.data.shards` of src/rewarm/data/shards.py; a package's `__init__.py` is the package."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_file(name: str, root: Path = PACKAGE) -> Path:
    """The file of a module or package of ours."""
    relative = Path(*name.split(".")[1:])
    package = root / relative / "__init__.py"
    return package if package.exists() else (root / relative).with_suffix(".py")


def imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ours (`known`) a file imports, anywhere in it. `from rewarm import grid` imports the
    module rewarm.grid; `from rewarm.io import write_json`, rewarm.io."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found |= submodules or {node.module}
    return found & known


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Every module of the package -> the modules of ours it imports (itself excluded)."""
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    known = set(files)
    return {name: imports(path, known) - {name} for name, path in files.items()}


def closure(modules: list[str], root: Path = PACKAGE) -> set[str]:
    """The modules these need, transitively, with the packages whose `__init__` runs on the way."""
    edges = graph(root)
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo += [*edges[name], *parents]
    return seen
