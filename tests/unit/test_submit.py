"""What ``featurestream submit`` ships to the TaskManagers with the jobs (``--pyFiles``): the jobs'
code and everything it imports, and no CLI, reader or local-stack tooling."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from featurestream.cli.submit import JOB_MODULES, stage_python_files
from featurestream.settings import Settings


def staged_tree(tmp_path: Path) -> Path:
    return stage_python_files(Settings().replace(home=tmp_path))


def module_file(staged: Path, module: str) -> Path | None:
    """The staged file of ``module``, if it is staged."""
    base = staged / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def is_module(name: str) -> bool:
    """True if ``name`` is an importable module of the featurestream namespace."""
    if name.split(".")[0] != "featurestream":
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent is a module, not a package
        return False


def imported_modules(source: Path) -> set[str]:
    """Every ``featurestream.*`` module a file imports, lazy imports in functions included
    (``from a import b`` needs ``a``, and ``a.b`` too if that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if is_module(f"{node.module}.{alias.name}")}
    return {name for name in found if name.split(".")[0] == "featurestream"}


def test_only_the_jobs_code_is_staged(tmp_path: Path) -> None:
    staged = staged_tree(tmp_path)
    root = staged / "featurestream"
    assert sorted(p.name.removesuffix(".py") for p in root.iterdir()) == [
        "__init__", "errors", "jdk", "jobs", "schemas", "settings", "udfs"]
    names = {p.name for p in staged.rglob("*")}
    assert not names & {"cli", "devstack", "serving", "flink_rest.py", "__pycache__"}
    for job in JOB_MODULES.values():
        assert module_file(staged, job) is not None, job


def test_everything_the_staged_code_imports_is_staged(tmp_path: Path) -> None:
    staged = staged_tree(tmp_path)
    missing = sorted(f"{source.relative_to(staged)} imports {module}"
                     for source in staged.rglob("*.py") for module in imported_modules(source)
                     if module_file(staged, module) is None)
    assert not missing, missing
