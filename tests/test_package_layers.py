"""The packages' layers: the libraries never import what sits above them.

The Triton models import `llm_stack`, and the frontend image ships `llm_stack` and
`frontend` without the launcher's or the load tests' dependencies; an import upwards,
even a lazy one inside a function, would break one of them. Inside the frontend, the
shared core knows no API package: an API is added (or removed) by its package and its
line in `frontend.app`.
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


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports (absolute imports), at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth of its code."""
    return {name.split(".")[0] for name in imported_modules(path)}


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


# The frontend's shared core: its top-level modules but the app, which lists the APIs.
CORE = sorted(p for p in (REPO / "frontend").glob("*.py") if p.name != "app.py")
# What the core may import of frontend.apis: the type an API package exports.
API_TYPE = "frontend.apis.api"


def test_frontend_core_imports_no_api_package() -> None:
    assert CORE
    imports = {
        p.name: sorted(
            m for m in imported_modules(p) if m.startswith("frontend.apis") and m != API_TYPE
        )
        for p in CORE
    }
    assert {name: found for name, found in imports.items() if found} == {}
