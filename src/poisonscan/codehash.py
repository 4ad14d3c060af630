"""Hashes of the package code a workflow rule runs, derived from the imports.

Snakemake reruns a job when its ``params:`` change, but it does not follow the
modules a script imports. Every rule therefore passes ``code_hash(<its step
module>)`` as a parameter: the hash of the package version and of the source of
every ``poisonscan`` module that step module imports, transitively. Editing a
module reruns exactly the rules whose steps import it.

Imports are read from the source (``ast``), not by importing: every ``import``
statement that runs counts wherever it stands (module level or inside a
function). Importing ``poisonscan.a.b`` also runs ``poisonscan/__init__.py``
and ``poisonscan/a/__init__.py``, so those count too. Imports under ``if
TYPE_CHECKING`` do not run; in a package ``__init__`` they declare the names
the package loads lazily (``explain``, ``distances``), so a module that uses
such a name (``from poisonscan.distances import gw_knn_matrix``, or
``distances.gw_knn_matrix``) depends on the module that defines it.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

__all__ = ["code_hash", "module_closure"]

_ROOT = Path(__file__).parent
_PACKAGE = "poisonscan"


def _source(module: str) -> Path | None:
    """File of ``module`` (a dotted name below the package), or None if there is none."""
    parts = module.split(".")[1:]
    base = _ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _parents(module: str) -> list[str]:
    """``poisonscan.a.b`` -> ``["poisonscan", "poisonscan.a"]``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _origin(node: ast.ImportFrom, package: str) -> str:
    if node.level:  # relative import
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        return ".".join(parts + ([node.module] if node.module else []))
    return node.module or ""


@cache
def _parse(module: str) -> tuple[ast.Module, str]:
    path = _source(module)
    assert path is not None
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return ast.parse(path.read_text(), filename=str(path)), package


def _statements(tree: ast.AST, type_checking: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run (``type_checking=False``) or those under ``if
    TYPE_CHECKING`` (True)."""
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    visit_one(stmt, True)
                for stmt in child.orelse:
                    visit_one(stmt, guarded)
            else:
                visit_one(child, guarded)

    def visit_one(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            if guarded == type_checking:
                out.append(node)
        else:
            visit(node, guarded)

    visit(tree, False)
    return out


@cache
def _lazy_names(package: str) -> dict[str, str]:
    """Name -> defining module of the names a package ``__init__`` imports under
    ``TYPE_CHECKING`` (its lazily loaded names)."""
    path = _source(package)
    if path is None or path.name != "__init__.py":
        return {}
    tree, pkg = _parse(package)
    out: dict[str, str] = {}
    for node in _statements(tree, type_checking=True):
        if isinstance(node, ast.ImportFrom):
            origin = _origin(node, pkg)
            for alias in node.names:
                out[alias.asname or alias.name] = origin
    return out


@cache
def _imports(module: str) -> frozenset[str]:
    """The ``poisonscan`` modules that running the source of ``module`` imports."""
    tree, package = _parse(module)
    found: set[str] = set()
    bound: dict[str, str] = {}  # local name -> poisonscan module it is bound to
    for node in _statements(tree, type_checking=False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
                if alias.asname:
                    bound[alias.asname] = alias.name
        else:
            origin = _origin(node, package)
            found.add(origin)
            lazy = _lazy_names(origin)
            for alias in node.names:
                # ``from poisonscan import distances`` imports the submodule distances
                sub = f"{origin}.{alias.name}"
                found.add(sub)
                bound[alias.asname or alias.name] = sub
                if alias.name in lazy:
                    found.add(lazy[alias.name])
    # ``distances.gw_knn_matrix`` loads the module that defines the lazy name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            target = bound.get(node.value.id)
            if target is not None and node.attr in _lazy_names(target):
                found.add(_lazy_names(target)[node.attr])
    return frozenset(
        name for name in found if name.split(".")[0] == _PACKAGE and _source(name) is not None
    )


@cache
def module_closure(module: str) -> frozenset[str]:
    """``module`` and every ``poisonscan`` module it imports, transitively (with parents).

    Raises
    ------
    ValueError
        If ``module`` is not a module or package of poisonscan.
    """
    if module.split(".")[0] != _PACKAGE or _source(module) is None:
        raise ValueError(f"no module or package {module} in {_ROOT}")
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_parents(name))
        todo.extend(_imports(name))
    return frozenset(seen)


def code_hash(*modules: str) -> str:
    """Hash of the package version and the source of ``modules`` and all they import.

    Parameters
    ----------
    *modules : str
        Dotted module names, e.g. ``"poisonscan.steps.train"``.

    Returns
    -------
    str
        16 hex digits; equal for equal code, whatever the order of ``modules``.
    """
    from poisonscan import __version__

    names = sorted(set().union(*(module_closure(m) for m in modules)))
    h = hashlib.sha256(__version__.encode())
    for name in names:
        path = _source(name)
        assert path is not None
        h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]
