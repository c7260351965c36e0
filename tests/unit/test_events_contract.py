"""The Avro contract documents itself and agrees with the Python mirror of it."""

from __future__ import annotations

import json

import pytest

from featurestream.schemas import REGISTRY_MANIFEST, SCHEMA_DIR, load_schema, schema_path
from featurestream.udfs.contract.events import EVENT_TYPES, Event


def raw_schema() -> dict:
    return json.loads(schema_path("user_event").read_text(encoding="utf-8"))


def test_record_and_every_field_are_documented() -> None:
    schema = raw_schema()
    assert schema["doc"].strip()
    undocumented = [f["name"] for f in schema["fields"] if not f.get("doc", "").strip()]
    assert undocumented == []


def test_event_type_enum_equals_event_types() -> None:
    (field,) = [f for f in raw_schema()["fields"] if f["name"] == "event_type"]
    assert tuple(field["type"]["symbols"]) == EVENT_TYPES


def test_event_fields_mirror_the_schema_in_order() -> None:
    # The decoder builds Events positionally from Avro records, so the order matters.
    assert Event._fields == tuple(f["name"] for f in raw_schema()["fields"])


def test_optional_fields_default_to_null() -> None:
    optional = {f["name"]: f for f in raw_schema()["fields"] if isinstance(f["type"], list)}
    assert set(optional) == {"item_id", "amount", "context"}
    for field in optional.values():
        assert field["type"][0] == "null"
        assert field["default"] is None


def test_registry_manifest_names_existing_schemas_with_unique_ids() -> None:
    manifest = json.loads(REGISTRY_MANIFEST.read_text(encoding="utf-8"))
    assert manifest["events-value"][0] == {"id": 1, "file": "user_event.avsc"}
    entries = [entry for versions in manifest.values() for entry in versions]
    assert len({entry["id"] for entry in entries}) == len(entries)
    for entry in entries:
        assert (SCHEMA_DIR / entry["file"]).is_file()


def test_schema_lookup_accepts_stem_or_file_name_and_names_known_schemas() -> None:
    assert schema_path("user_event") == schema_path("user_event.avsc")
    assert load_schema("user_event")["name"] == "io.featurestream.UserEvent"
    with pytest.raises(FileNotFoundError, match="user_event"):
        schema_path("no_such_schema")
