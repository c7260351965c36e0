"""The Avro contracts (``*.avsc``) and the file-backed registry manifest (``registry.json``).

This directory is the only home of the schemas; code finds them through :func:`schema_path` and
:func:`load_schema`, never through paths of its own.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, cast

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parent
REGISTRY_MANIFEST = SCHEMA_DIR / "registry.json"


def schema_path(name: str) -> Path:
    """Path of the schema ``name`` (``"user_event"`` or ``"user_event.avsc"``)."""
    filename = name if name.endswith(".avsc") else f"{name}.avsc"
    path = SCHEMA_DIR / filename
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc")))
        raise FileNotFoundError(f"no schema {name!r} in {SCHEMA_DIR} (known: {known})")
    return path


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed (fastavro) schema ``name``; cached, so treat it as read-only."""
    return parse_schema_file(schema_path(name))


def parse_schema_file(path: Path) -> dict[str, Any]:
    """Parse any ``.avsc`` file with fastavro (for schemas outside this directory, e.g. tests)."""
    parsed = fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))
    return cast(dict[str, Any], parsed)  # a record schema parses to a dict
