"""What the reader serves: each declared entity's feature names, from the definitions.

The reader loads the definitions once, at start, as the jobs do, so its routes, validation and
document follow what the feature job writes (``udfs/store/redis_layout.py``: one hash per
entity instance).
"""

from __future__ import annotations

from featurestream.settings import Settings
from featurestream.udfs.definitions.model import Definitions


def reader_definitions(settings: Settings) -> Definitions:
    """The definitions ``settings`` name (the built-in ones when none are named); a mistake in
    them is a SettingsError naming ``FEATURESTREAM_DEFINITIONS``."""
    return settings.load_definitions()


def served_entities(definitions: Definitions) -> dict[str, tuple[str, ...]]:
    """Entity name -> its row's feature names, in declaration order."""
    return {e.name: tuple(f.name for f in definitions.features_of(e.name))
            for e in definitions.entities}
