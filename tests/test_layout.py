"""The tests' own layout: shared helpers live in tests.support, so no test module imports another test module
or a conftest (a helper that two modules need moves to tests/support/)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module a file imports, with its line (``from tests.x import y`` names tests.x and tests.x.y)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # a relative import is always another module of tests/
                found.append((node.lineno, "." * node.level + (node.module or "")))
            elif node.module:
                found.append((node.lineno, node.module))
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def forbidden(module: str) -> bool:
    if module.startswith("."):
        return True
    if module != "tests" and not module.startswith("tests."):
        return False
    return not (module == "tests.support" or module.startswith("tests.support."))


def test_test_modules_import_only_the_support_package_from_tests() -> None:
    offenders = [
        f"{path.relative_to(TESTS.parent)}:{line}: {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, module in imported_modules(path)
        if forbidden(module)
    ]
    assert offenders == [], "move shared helpers to tests/support/:\n" + "\n".join(offenders)


def test_the_rule_catches_what_it_is_for() -> None:
    assert forbidden("tests.store.test_reconciler")
    assert forbidden("tests.conftest")
    assert forbidden("tests.e2e.conftest")
    assert forbidden(".helpers")
    assert not forbidden("tests.support.waiting")
    assert not forbidden("prebuildd.store.db")
