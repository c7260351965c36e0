"""What a definitions module imports: ``from featurestream.definitions import *``.

See docs/features.md for the declarations and an example.
"""

from featurestream.udfs.definitions.filters import (
    all_of,
    eq,
    ge,
    gt,
    is_null,
    isin,
    le,
    lt,
    ne,
    not_null,
)
from featurestream.udfs.definitions.model import LIFETIME, Entity, Feature, FeatureGroup, Source

__all__ = ["LIFETIME", "Entity", "Feature", "FeatureGroup", "Source", "all_of", "eq", "ge",
           "gt", "is_null", "isin", "le", "lt", "ne", "not_null"]
