"""The one lookup of the JDK's tools: ``$JAVA_HOME/bin/<tool>``, else ``<tool>`` on PATH.

The local stack's Flink runs ``java``; the jobs compile their connector jar with ``javac`` and
``jar`` (:mod:`featurestream.jobs.connector_jar`), so this module travels with the jobs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from featurestream.errors import UserFacingError

INSTALL = "apt-get install -y openjdk-17-jdk-headless"


def java_tool(name: str, needed_for: str) -> str:
    """The path of the JDK tool ``name`` (``java``, ``javac``, ``jar``).

    Raises a :class:`UserFacingError` naming ``needed_for`` and the fix if there is none.
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / name, os.X_OK):
        return str(Path(java_home) / "bin" / name)
    found = shutil.which(name)
    if not found:
        raise UserFacingError(f"'{name}' not found ({needed_for}): install a JDK ({INSTALL}) "
                              "or set JAVA_HOME")
    return found
