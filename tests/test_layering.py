"""Public means re-exported: no module imports another package's private ``_module``.

The package layering itself (which stage may import which) is ``lint-imports``' contract in
pyproject.toml; this test covers what that contract cannot say: a package may use its own
private modules, never another's (``from tellapart.data import X``, not ``tellapart.data._x``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import tellapart

PACKAGE = Path(tellapart.__file__).parent


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every absolute import, including those inside functions."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)  # from tellapart.data import _x
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
    return found


def _owner(path: Path) -> str:
    """The package a file belongs to: ``tellapart.data`` for data/_cache.py; ``tellapart`` for top-level modules."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def _private_of_another(module: str, owner: str) -> bool:
    """True for ``tellapart.<pkg>._x`` (or deeper) when ``<pkg>`` is not the importer's own package."""
    parts = module.split(".")
    if parts[0] != "tellapart" or len(parts) < 3:
        return False
    package = ".".join(parts[:2])
    return package != owner and any(p.startswith("_") and not p.startswith("__") for p in parts[2:])


def test_no_module_imports_another_packages_private_modules() -> None:
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        owner = _owner(path)
        for line, module in _imported_modules(ast.parse(path.read_text(), str(path))):
            if _private_of_another(module, owner):
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module}")
    assert not offences, (
        "private modules of another package are imported; add the name to its owner's __all__ "
        "(package __init__) and import it from the package:\n" + "\n".join(offences)
    )


def test_the_check_itself_tells_own_from_foreign_private_modules() -> None:
    assert _private_of_another("tellapart.data._sources", "tellapart.recipes")
    assert _private_of_another("tellapart.data._sources._digest", "tellapart.predict")
    assert not _private_of_another("tellapart.data._sources", "tellapart.data")
    assert not _private_of_another("tellapart.data", "tellapart.recipes")
    assert not _private_of_another("tellapart.config", "tellapart.train")
    assert _owner(PACKAGE / "train" / "_fit.py") == "tellapart.train"
    assert _owner(PACKAGE / "cli.py") == "tellapart"
