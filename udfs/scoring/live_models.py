"""The models a scoring task serves, reloaded from the registry while the job runs.

With an experiment, users are split among its versions (:mod:`udfs.scoring.variants`); without one,
every user gets the latest version (variant ``latest``). An optional shadow version is scored on
every record but not served. :meth:`ServingModels.refresh` looks at the registry at most once per
poll interval (the directory's mtime) and swaps models only between micro-batches, so each record
is scored exactly once, by the models in place when its batch started.

A version that cannot be loaded is kept as its :class:`ModelError`: records routed to it go to
the dead-letter topic until a later refresh finds it usable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from featurestream.udfs.scoring.model_registry import LoadedModel, ModelError, ModelRegistry
from featurestream.udfs.scoring.variants import LATEST, Arm, VariantAssigner

Model = LoadedModel | ModelError


class Route(NamedTuple):
    """The model serving a user: the variant written on its scores, the version it was routed
    to (None when the registry has none), the model, or why that version cannot be loaded, and
    the id of the registry's experiment record that chose it (None when the split comes from the
    settings or there is none)."""

    variant: str
    version: int | None
    model: Model
    experiment: str | None = None


class Shadow(NamedTuple):
    """The shadow version, scored on every record but never served, and its model or error."""

    version: int
    model: Model


class ServingModels:
    """Routes users to loaded models; reloads when the registry changes."""

    def __init__(self, registry: ModelRegistry, arms: tuple[Arm, ...], shadow: int | None,
                 poll_interval_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self._assigner = VariantAssigner(arms) if arms else None
        self._shadow_version = shadow
        self._poll_interval_s = poll_interval_ms / 1000
        self._clock = clock
        self._next_poll = float("-inf")
        self._marker: int | None = None
        self._loaded: dict[int, Model] = {}
        # Built at each refresh, so routing a record builds nothing.
        self._latest = Route(LATEST, None,
                             ModelError(f"no {registry.name} model in {registry.directory}"))
        self._routes: dict[int, Route] = {}  # by arm version
        self.reloads = 0

    def refresh(self) -> None:
        """Pick up new or fixed versions if the poll interval has passed and the dir changed."""
        now = self._clock()
        if now < self._next_poll:
            return
        self._next_poll = now + self._poll_interval_s
        marker = self.registry.changed_marker()
        if marker == self._marker:
            return
        self._marker = marker
        versions = self.registry.versions()
        wanted = {arm.version for arm in self._assigner.arms} if self._assigner else set()
        if self._shadow_version is not None:
            wanted.add(self._shadow_version)
        if not self._assigner and versions:
            wanted.add(versions[-1])
        self._loaded = {v: self._load(v) for v in sorted(wanted)}
        if self._assigner:
            self._routes = {arm.version: Route(arm.label, arm.version, self._loaded[arm.version])
                            for arm in self._assigner.arms}
        elif versions:
            latest = self._loaded[versions[-1]]
            version = latest.metadata.version if isinstance(latest, LoadedModel) else None
            self._latest = Route(LATEST, version, latest)
        self.reloads += 1

    def _load(self, version: int) -> Model:
        kept = self._loaded.get(version)
        if isinstance(kept, LoadedModel):
            return kept  # versions are immutable: never reload a good one
        try:
            return self.registry.load(version)
        except ModelError as exc:
            return exc

    def route(self, user_id: str) -> Route:
        """The model serving ``user_id``."""
        if self._assigner is None:
            return self._latest
        return self._routes[self._assigner.assign(user_id).version]

    @property
    def shadow(self) -> Shadow | None:
        """The shadow, or None when none is configured."""
        if self._shadow_version is None:
            return None
        return Shadow(self._shadow_version, self._loaded[self._shadow_version])
