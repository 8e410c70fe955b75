"""The packages' layers: the libraries never import what sits above them.

The Triton models import `llm_stack`, and the frontend image ships `llm_stack` and
`frontend` without the launcher's or the load tests' dependencies; an import upwards,
even a lazy one inside a function, would break one of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Where the code lives, and the top-level packages it must never import.
FORBIDDEN = {
    "llm_stack": {"frontend", "launcher", "loadtest", "tests"},
    "frontend": {"launcher", "loadtest", "tests"},
    "model_repository": {"frontend", "launcher", "loadtest", "tests"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imported_packages_sees_lazy_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import a.b\ndef f() -> None:\n    from c.d import e\n    from . import g\n")
    assert imported_packages(source) == {"a", "c"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_above_it(package: str) -> None:
    sources = sorted((REPO / package).rglob("*.py"))
    assert sources, package
    upward = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sources
    }
    assert {path: names for path, names in upward.items() if names} == {}
