"""The static checks of the test command: mypy, and the import contracts (import-linter).

Neither tool follows setup.py's package-dir mapping (``udfs/`` imports as
``featurestream.udfs`` only through setuptools' editable import hook), so this script lays out
``build/namespace/`` shaped like the installed namespace: real directories holding one symlink
per source file (import-linter's module discovery and mypy both see plain files), one folder per
entry of setup.py's ``ROOTS``, with the development code (``testing/``, ``bench/``, ``tests/``,
``scripts/``) beside ``featurestream/``. Both tools run there; mypy's file names are mapped back
to the repository's. Configuration: ``[tool.mypy]`` and ``[tool.importlinter]`` in
``pyproject.toml``; caches in ``build/``.

Usage: ``.venv/bin/python scripts/checks.py [mypy] [imports]`` (default: both).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
TREE = BUILD / "namespace"
DEV_PACKAGES = ("testing", "bench", "tests", "scripts")
CHECKS = ("mypy", "imports")
BIN = Path(sys.executable).parent
_MYPY_LOCATION = re.compile(r"^(?P<path>[^\s:]+\.pyi?)(?=:)", re.MULTILINE)


def package_roots() -> dict[str, str]:
    """setup.py's ``ROOTS`` (namespace -> folder), read without running setup.py."""
    for node in ast.parse((REPO / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["ROOTS"]:
            return {str(k): str(v) for k, v in ast.literal_eval(node.value).items()}
    raise SystemExit("scripts/checks.py: setup.py has no plain `ROOTS = {...}` assignment")


def build_tree() -> dict[str, str]:
    """Bring the link tree up to date; returns each link's path (relative to the tree) -> the
    repository path of its file.

    Links are replaced atomically and only where they changed, so checks running side by side
    (a shared working tree) never see a half-built tree, and mypy's cache stays valid.
    """
    places = {namespace.replace(".", "/"): folder
              for namespace, folder in package_roots().items()}
    places.update({name: name for name in DEV_PACKAGES})
    wanted: dict[Path, Path] = {}
    for place, folder in places.items():
        for source in (REPO / folder).rglob("*.py*"):
            if source.suffix in (".py", ".pyi") and "__pycache__" not in source.parts:
                wanted[TREE / place / source.relative_to(REPO / folder)] = source
    for link in TREE.rglob("*") if TREE.exists() else ():
        if link.is_symlink() and link not in wanted:
            link.unlink(missing_ok=True)
    for link, source in wanted.items():
        if not link.is_symlink() or link.readlink() != source:
            link.parent.mkdir(parents=True, exist_ok=True)
            fresh = link.with_name(f"{link.name}.{os.getpid()}.tmp")
            fresh.symlink_to(source)
            fresh.replace(link)
    return {str(link.relative_to(TREE)): str(source.relative_to(REPO))
            for link, source in wanted.items()}


def run_mypy(links: dict[str, str]) -> int:
    """mypy over the namespace and the development packages; paths printed as the repo's."""
    result = subprocess.run(
        [str(BIN / "mypy"), "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(BUILD / "mypy_cache"), "featurestream", *DEV_PACKAGES],
        cwd=TREE, capture_output=True, text=True, check=False)
    output = _MYPY_LOCATION.sub(lambda m: links.get(m["path"], m["path"]),
                                result.stdout + result.stderr)
    print(output, end="")
    return result.returncode


def run_import_linter() -> int:
    """The import contracts; ``featurestream`` resolves to the tree (import-linter puts its
    working directory first on ``sys.path``)."""
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-logo", "--cache-dir",
         str(BUILD / "import_linter_cache"), str(REPO / "pyproject.toml")],
        cwd=TREE, check=False).returncode


def main(argv: list[str]) -> int:
    """Run the chosen checks (all by default); non-zero if any fails."""
    chosen = argv or list(CHECKS)
    unknown = set(chosen) - set(CHECKS)
    if unknown:
        raise SystemExit(f"usage: scripts/checks.py [{'] ['.join(CHECKS)}]")
    links = build_tree()
    failed = []
    for name, check in (("mypy", lambda: run_mypy(links)), ("imports", run_import_linter)):
        if name not in chosen:
            continue
        started = time.monotonic()
        code = check()
        print(f"checks: {name} {'passed' if code == 0 else 'FAILED'} "
              f"in {time.monotonic() - started:.1f} s", flush=True)
        if code:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
