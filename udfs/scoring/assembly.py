"""Per model version: its vector plan, checked once, and its vectors for events -- what the
scoring job (:mod:`udfs.scoring.scorer`) and request-time scoring
(:mod:`udfs.scoring.request_scorer`) share, so the same event and rows give the same vector, and
so the same score, on both paths.

A plan is checked once per version (versions never change); a version whose features the
definitions do not provide is a :class:`Problem` of stage ``model`` naming them. Vectors come
from the plan's generated fast path, or from :meth:`VectorPlan.assemble` for the reason when it
declines. With ``nulls`` a missing value that has a default is NaN, so the caller knows which
values were missing (drift counts them, the API labels the answer) and :meth:`filled` puts the
defaults in for all of them in one vectorized step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from featurestream.udfs.contract.events import Event
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.model_registry import LoadedModel
from featurestream.udfs.scoring.vector import (
    EntityId,
    FastAssemble,
    FeatureCatalog,
    Row,
    UnknownFeature,
    VectorPlan,
)
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage


class VersionVectors:
    """Plans, fast assemblers and defaults by model version, each built on first use."""

    def __init__(self, catalog: FeatureCatalog) -> None:
        self._catalog = catalog
        self._plans: dict[tuple[str, int], VectorPlan | Problem] = {}
        # By version and whether missing values are NaN (served) or their defaults (shadow).
        self._fast: dict[tuple[str, int, bool], FastAssemble] = {}
        self._defaults: dict[tuple[str, int], np.ndarray] = {}  # in feature order, NaN: none

    def plan(self, model: LoadedModel) -> VectorPlan | Problem:
        """The vector plan of a version, or why the definitions cannot feed it."""
        metadata = model.metadata
        key = (metadata.name, metadata.version)
        plan = self._plans.get(key)
        if plan is None:
            try:
                plan = self._catalog.plan(metadata.features, metadata.feature_definitions)
            except UnknownFeature as exc:
                plan = Problem(Stage.MODEL, ErrorClass.MODEL_UNAVAILABLE,
                               f"{metadata.name} v{metadata.version} names {exc}")
            plan = self._plans[key] = plan
        return plan

    def vector(self, model: LoadedModel, plan: VectorPlan, event: Event,
               rows: Mapping[str, Row], ids: Mapping[str, EntityId], nulls: bool = False
               ) -> list[float] | Problem:
        """The version's vector for ``event`` (``rows``: the row of each entity that has one;
        ``ids``: the entity ids, named in messages), or why there is none. ``nulls``: NaN where
        a value is missing and has a default."""
        metadata = model.metadata
        key = (metadata.name, metadata.version, nulls)
        fast = self._fast.get(key)
        if fast is None:
            fast = self._fast[key] = plan.fast(metadata.defaults, nulls)
        vector = fast(event, rows)
        if vector is None:
            return plan.assemble(metadata.defaults, event, rows, ids)
        return vector

    def defaults(self, metadata: ModelMetadata) -> np.ndarray:
        """The version's defaults in feature order (NaN for a feature without one)."""
        key = (metadata.name, metadata.version)
        defaults = self._defaults.get(key)
        if defaults is None:
            defaults = self._defaults[key] = np.array(
                [metadata.defaults.get(name, math.nan) for name in metadata.features])
        return defaults

    def filled(self, vectors: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
        """``vectors`` (assembled with ``nulls``) with the defaults where they are NaN."""
        missing = np.isnan(vectors)
        if not missing.any():
            return vectors
        return np.where(missing, self.defaults(metadata), vectors)
