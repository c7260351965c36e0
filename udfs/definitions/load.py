"""Load the definitions a deployment runs: a Python module of declarations, or the defaults.

``FEATURESTREAM_DEFINITIONS`` names a ``.py`` file or an importable module; every
:class:`FeatureGroup` at its top level is loaded (in declaration order), as Feast collects the
objects of a feature repository. Avro sources get their field types from their schema (a name
in ``schemas/`` or a path, relative to the definitions file). Every mistake is one
:class:`DefinitionError` that names the file, the definition, the field and the fix.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from featurestream.schemas import SCHEMA_DIR
from featurestream.udfs.definitions.defaults import default_definitions
from featurestream.udfs.definitions.model import (
    DefinitionError,
    Definitions,
    FeatureGroup,
    Source,
    validate,
)

_AVRO_TYPES = {"string": "string", "enum": "string", "int": "long", "long": "long",
               "float": "double", "double": "double", "boolean": "boolean"}


def load_definitions(location: str, windows: tuple[str, ...], events_topic: str) -> Definitions:
    """The definitions at ``location`` (a file or module), or the defaults when it is empty."""
    if not location:
        return default_definitions(windows, events_topic)
    try:
        return _load(location)
    except DefinitionError as exc:
        raise DefinitionError(f"{location}: {exc}") from None


def _load(location: str) -> Definitions:
    module = _import(location)
    # A group bound to two names (an alias, an import) is declared once.
    groups = list(dict.fromkeys(v for v in vars(module).values() if isinstance(v, FeatureGroup)))
    if not groups:
        raise DefinitionError("declares no FeatureGroup at its top level; see "
                              "docs/features.md for an example")
    base = Path(module.__file__).parent if module.__file__ else Path.cwd()
    sources: dict[Source, Source] = {}
    resolved = []
    for group in groups:
        source = sources.get(group.source)
        if source is None:
            source = sources[group.source] = _with_avro_fields(group.source, base)
        resolved.append(replace(group, source=source))
    return validate(resolved)


def _import(location: str) -> ModuleType:
    path = Path(location).expanduser()
    try:
        if location.endswith(".py"):
            if not path.is_file():
                raise DefinitionError("no such file; name a .py file of declarations or an "
                                      "importable module")
            spec = importlib.util.spec_from_file_location("featurestream_definitions", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(location)
    except DefinitionError:
        raise
    except ModuleNotFoundError as exc:
        if location.endswith(".py") or not _is_the_module(exc.name, location):
            raise DefinitionError(f"the module failed: {type(exc).__name__}: {exc}") from None
        raise DefinitionError(f"cannot import it ({exc}); name a .py file or a module on the "
                              "Python path") from None
    except Exception as exc:  # the user's module failed while running
        raise DefinitionError(f"the module failed: {type(exc).__name__}: {exc}") from None


def _is_the_module(missing: str | None, location: str) -> bool:
    """Whether a ModuleNotFoundError is about ``location`` itself (or a parent package), not
    about something the module imports."""
    return missing is not None and (location == missing or location.startswith(missing + "."))


def _with_avro_fields(source: Source, base: Path) -> Source:
    """The source with field types read from its Avro schema (declared fields win)."""
    if source.avro is None:
        return source
    path = _schema_file(source.avro, base)
    if path is None:
        raise DefinitionError(f"source {source.name!r}, field 'avro': no schema "
                              f"{source.avro!r} (looked beside the definitions and in "
                              f"{SCHEMA_DIR})")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DefinitionError(f"source {source.name!r}, field 'avro': cannot read "
                              f"{path}: {exc}") from None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise DefinitionError(f"source {source.name!r}, field 'avro': {path} is not "
                              "an Avro record schema")
    types = {f["name"]: avro_field_type(f["type"]) for f in schema.get("fields", [])}
    types.update(source.field_types)
    return replace(source, fields=tuple(types.items()), avro=str(path))


def _schema_file(name: str, base: Path) -> Path | None:
    candidates = [Path(name).expanduser(), base / name, SCHEMA_DIR / name,
                  SCHEMA_DIR / f"{name}.avsc"]
    return next((p for p in candidates if p.is_file()), None)


def avro_field_type(avro: Any) -> str:
    """The definitions type of an Avro field type (``other`` for maps, arrays, records)."""
    nullable = False
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        nullable = len(branches) < len(avro)
        if len(branches) != 1:
            return "other"
        avro = branches[0]
    if isinstance(avro, dict):  # enum, map, array, record, or a type with a logicalType
        avro = avro.get("type")
    kind = _AVRO_TYPES.get(avro) if isinstance(avro, str) else None
    if kind is None:
        return "other"
    return f"{kind}?" if nullable else kind
