"""Load the definitions a deployment runs: a Python module of declarations, or the defaults.

``FEATURESTREAM_DEFINITIONS`` names a ``.py`` file or an importable module; every
:class:`FeatureGroup` at its top level is loaded (in declaration order), as Feast collects the
objects of a feature repository. Avro sources get their field types from their schema (a name
in ``schemas/`` or a path, relative to the definitions file); a source naming a
``registry_subject`` from the subject's latest schema in the schema registry, which it then
carries as ``schema_json``. Every mistake is one :class:`DefinitionError` that names the file,
the definition, the field and the fix.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from featurestream.schemas import SCHEMA_DIR
from featurestream.udfs.contract.schema_registry import (
    FileSchemaRegistry,
    Schema,
    SchemaRegistry,
    SchemaRegistryError,
    UnknownSubject,
    canonical_json,
)
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


def load_definitions(location: str, windows: tuple[str, ...], events_topic: str,
                     registry: Callable[[], SchemaRegistry] = FileSchemaRegistry) -> Definitions:
    """The definitions at ``location`` (a file or module), or the defaults when it is empty.

    ``registry`` builds the schema registry that ``registry_subject`` sources are read from;
    it is called only if there is one (a remote registry's client is slow to import)."""
    if not location:
        return default_definitions(windows, events_topic)
    try:
        return _load(location, cache(registry))
    except DefinitionError as exc:
        raise DefinitionError(f"{location}: {exc}") from None


def _load(location: str, registry: Callable[[], SchemaRegistry]) -> Definitions:
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
            source = sources[group.source] = _resolved(group.source, base, registry)
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


def _resolved(source: Source, base: Path, registry: Callable[[], SchemaRegistry]) -> Source:
    """The source with the field types of its schema, if it has one."""
    subject = source.registry_subject
    if isinstance(subject, str) and subject and source.avro is None:
        return _with_registry_fields(source, subject, registry)
    return _with_avro_fields(source, base)  # both given: validate() says to remove one


def _with_registry_fields(source: Source, subject: str,
                          registry: Callable[[], SchemaRegistry]) -> Source:
    """The source with field types and ``schema_json`` from the subject's latest schema."""
    where = f"source {source.name!r}, field 'registry_subject'"
    try:
        schema = registry().latest(subject)
    except UnknownSubject as exc:
        raise DefinitionError(f"{where}: {exc}; register the source's Avro schema under "
                              f"{subject!r}, or name the subject it is registered under "
                              f"(usually '<topic>-value', here '{source.topic}-value')") from None
    except SchemaRegistryError as exc:
        raise DefinitionError(f"{where}: cannot fetch the latest schema of subject {subject!r} "
                              f"({exc}); start the registry or fix the "
                              "FEATURESTREAM_SCHEMA_REGISTRY_* settings, or declare the "
                              "source's fields (fields=) or Avro file (avro=)") from None
    if schema.get("type") != "record":
        raise DefinitionError(f"{where}: the latest schema of subject {subject!r} is not an "
                              "Avro record schema; register a record schema under it")
    return replace(source, fields=_field_types(schema, source), schema_json=canonical_json(schema))


def _field_types(schema: Schema, source: Source) -> tuple[tuple[str, str], ...]:
    """The field types of an Avro record schema, overridden by the source's declared ones."""
    types = {f["name"]: avro_field_type(f["type"]) for f in schema.get("fields", [])}
    types.update(source.field_types)
    return tuple(types.items())


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
    return replace(source, fields=_field_types(schema, source), avro=str(path))


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
