"""A Python that has PyFlink and nothing of featurestream: what a remote cluster's TaskManagers
run when their image installs only ``apache-flink``.

A virtualenv without site-packages of its own but one ``.pth`` line: a directory of symlinks to
the top-level files of exactly apache-flink's dependency closure (and pip, which Flink runs to
install ``--pyRequirements``), taken from this environment by each distribution's RECORD.
Creating it takes ~3 s; a venv with ``pip install apache-flink`` from this machine's local
index took 132 s (measured once, 2-core box).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

from featurestream.cli.ship import PYFLINK, InstalledDistributions, closure

LINKED_EXTRA = ("pip",)


def top_level_entries(dist: str) -> set[str]:
    """The names a distribution installs directly in site-packages (packages, modules, their
    ``.libs`` and its ``.dist-info``), from its RECORD."""
    files = importlib.metadata.distribution(dist).files or []
    return {f.parts[0] for f in files if f.parts and f.parts[0] not in ("..", "__pycache__")}


def bare_python(directory: Path) -> Path:
    """Create the virtualenv in ``directory``; return its python."""
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv",
                    "--without-pip", str(directory)], check=True, capture_output=True)
    links = directory / "pyflink-closure"
    links.mkdir()
    site_packages = Path(str(importlib.metadata.distribution(PYFLINK).locate_file("")))
    for dist in [*closure([Requirement(PYFLINK)], InstalledDistributions()), *LINKED_EXTRA]:
        for name in top_level_entries(dist):
            if not (links / name).exists():
                (links / name).symlink_to(site_packages / name)
    (venv_site_packages(directory) / "pyflink-closure.pth").write_text(f"{links}\n")
    return directory / "bin" / "python"


def venv_site_packages(directory: Path) -> Path:
    """The virtualenv's own site-packages."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return directory / "lib" / version / "site-packages"
