"""The models a scoring task serves, reloaded from the registry while the job runs.

With an experiment, users are split among its versions (:mod:`udfs.scoring.variants`); without one,
every user gets the latest version (variant ``latest``). An optional shadow version is scored on
every record but not served. The experiment and shadow are the registry's current experiment
record when it has one (``featurestream models canary ...``), else the settings
(:func:`udfs.scoring.experiments.resolve`). :meth:`ServingModels.refresh` looks at the registry
at most once per poll interval (the directory's mtime: a new version; the record file's identity:
a new record) and swaps models and split only between micro-batches, so each record is scored
exactly once, by the models in place when its batch started.

A version that cannot be loaded is kept as its :class:`ModelError`: records routed to it go to
the dead-letter topic until a later refresh finds it usable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

from featurestream.udfs.scoring.experiments import (
    Rollout,
    Split,
    history_marker,
    live_rollout,
)
from featurestream.udfs.scoring.model_registry import LoadedModel, ModelError, ModelRegistry
from featurestream.udfs.scoring.variants import LATEST, Arm, VariantAssigner

Model = LoadedModel | ModelError

log = logging.getLogger(__name__)


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
    """Routes users to loaded models; reloads when the registry changes. ``arms`` and
    ``shadow`` are the settings' split, used while the registry holds no experiment record."""

    def __init__(self, registry: ModelRegistry, arms: tuple[Arm, ...], shadow: int | None,
                 poll_interval_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self._default = Split(arms, shadow)
        self._poll_interval_s = poll_interval_ms / 1000
        self._clock = clock
        self._next_poll = float("-inf")
        self._marker: tuple[tuple[int, tuple[int, ...]], tuple[int, int, int]] | None = None
        self._loaded: dict[int, Model] = {}
        self.rollout = Rollout(arms, shadow, None, None)
        self._assigner = VariantAssigner(arms) if arms else None
        # Built at each refresh, so routing a record builds nothing.
        self._latest = Route(LATEST, None,
                             ModelError(f"no {registry.name} model in {registry.directory}"))
        self._routes: dict[int, Route] = {}  # by arm version
        self.reloads = 0

    def refresh(self) -> None:
        """Pick up new or fixed versions and a new experiment record if the poll interval has
        passed and the dir changed."""
        now = self._clock()
        if now < self._next_poll:
            return
        self._next_poll = now + self._poll_interval_s
        marker = (self.registry.changed_marker(), history_marker(self.registry))
        if marker == self._marker:
            return
        self._marker = marker
        rollout = live_rollout(self.registry, self._default)
        if rollout.problem is not None:  # a hand-edited record: keep serving the last split
            if rollout.problem != self.rollout.problem:
                log.error("experiment record not applied, serving %s as before: %s",
                          self.rollout.experiment or "the settings' split", rollout.problem)
            rollout = replace(self.rollout, latest=rollout.latest, problem=rollout.problem)
        self._apply(rollout)
        self.reloads += 1

    def _apply(self, rollout: Rollout) -> None:
        """Load what ``rollout`` serves and build its routes, then swap them in together (a
        load that fails leaves its version a ModelError, never a half-built routing)."""
        loaded = {v: self._load(v) for v in sorted(rollout.live)}
        assigner = VariantAssigner(rollout.arms) if rollout.arms else None
        routes = self._routes
        latest_route = self._latest
        if assigner:
            routes = {arm.version: Route(arm.label, arm.version, loaded[arm.version],
                                         rollout.experiment)
                      for arm in assigner.arms}
        elif rollout.latest is not None:
            latest = loaded[rollout.latest]
            version = latest.metadata.version if isinstance(latest, LoadedModel) else None
            latest_route = Route(LATEST, version, latest, rollout.experiment)
        self.rollout, self._assigner, self._loaded = rollout, assigner, loaded
        self._routes, self._latest = routes, latest_route

    def _load(self, version: int) -> Model:
        kept = self._loaded.get(version)
        if isinstance(kept, LoadedModel):
            return kept  # versions are immutable: never reload a good one
        try:
            return self.registry.load(version)
        except ModelError as exc:
            return exc
        except Exception as exc:  # an unreadable file (permissions, I/O): this version only
            return ModelError(f"{self.registry.name} v{version} could not be loaded: "
                              f"{type(exc).__name__}: {exc}")

    @property
    def experiment(self) -> str | None:
        """The id of the experiment record in effect (None: the settings' split)."""
        return self.rollout.experiment

    def route(self, user_id: str) -> Route:
        """The model serving ``user_id``."""
        if self._assigner is None:
            return self._latest
        return self._routes[self._assigner.assign(user_id).version]

    def fallback(self, version: int) -> Route | None:
        """The route to serve ``version``'s users while it cannot predict: the experiment's
        heaviest other arm with a loaded model (None without an experiment: no other version
        is live, so there is nothing to fall back to)."""
        if self._assigner is None:
            return None
        others = [arm for arm in self._assigner.arms if arm.version != version
                  and isinstance(self._routes[arm.version].model, LoadedModel)]
        if not others:
            return None
        return self._routes[max(others, key=lambda arm: arm.weight).version]

    @property
    def shadow(self) -> Shadow | None:
        """The shadow, or None when none is configured."""
        shadow = self.rollout.shadow
        if shadow is None:
            return None
        return Shadow(shadow, self._loaded[shadow])
