"""A model's JSON sidecar: what the scoring job needs to know beside the LightGBM text file.

Fields: ``name``, ``version`` (1, 2, ...), ``features`` (the vector's order), ``defaults`` (the
value of a feature when the user has no row or the row has no value; a feature without one
makes such a record unscorable), ``created_at`` (ISO 8601, UTC), ``metrics`` (e.g. the held-out
AUC), ``training`` (free-form provenance: data, parameters) and, optionally,
``training_distribution``: the bins of each feature and of the score on the training rows
(:class:`udfs.telemetry.drift.TrainingDistribution`), which drift is measured against. Sidecars
written before it was recorded still load; their versions have no drift.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from featurestream.udfs.telemetry.drift import TrainingDistribution

_NAME = re.compile(r"^[A-Za-z0-9_]+$")
REQUIRED = ("name", "version", "features", "defaults", "created_at", "metrics")


@dataclass(frozen=True)
class ModelMetadata:
    """The sidecar of one model version."""

    name: str
    version: int
    features: tuple[str, ...]
    defaults: dict[str, float]
    created_at: str
    metrics: dict[str, float]
    training: dict[str, Any] = field(default_factory=dict)
    training_distribution: TrainingDistribution | None = None

    def no_distribution(self) -> str | None:
        """Why drift cannot be measured for this version (None: it can)."""
        if self.training_distribution is not None:
            return None
        return (f"no training distribution recorded for version {self.version}; retrain with "
                "featurestream train")

    @property
    def feature_definitions(self) -> dict[str, str] | None:
        """The definitions of its row features it was trained with (canonical text by name,
        ``training.feature_definitions``); None for a model trained before they were recorded."""
        recorded = self.training.get("feature_definitions")
        return recorded if isinstance(recorded, dict) else None

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistency."""
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits and underscores")
        if type(self.version) is not int or self.version < 1:
            raise ValueError(f"version {self.version!r}: must be an integer >= 1")
        if not self.features or not all(isinstance(f, str) and f for f in self.features):
            raise ValueError("features: list the feature names in the model's order")
        if len(set(self.features)) != len(self.features):
            raise ValueError("features: each name may appear once")
        unknown = sorted(set(self.defaults) - set(self.features))
        if unknown:
            raise ValueError(f"defaults for features the model does not use: {unknown}")
        for kind, values in (("defaults", self.defaults), ("metrics", self.metrics)):
            for key, value in values.items():
                if type(value) not in (int, float) or not math.isfinite(value):
                    raise ValueError(f"{kind}[{key!r}] = {value!r}: must be a finite number")
        distribution = self.training_distribution
        if distribution is not None and set(distribution.features) != set(self.features):
            raise ValueError("training_distribution: must have the bins of every feature, and "
                             "of no other")

    def to_json(self) -> str:
        """The sidecar text."""
        record = asdict(self)
        record["features"] = list(self.features)
        if self.training_distribution is None:
            del record["training_distribution"]
        else:
            record["training_distribution"] = self.training_distribution.to_json()
        return json.dumps(record, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        """Parse and validate a sidecar (ValueError says what is wrong)."""
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        missing = [key for key in REQUIRED if key not in record]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if not isinstance(record["features"], list):
            raise ValueError("features: must be a list")
        for key in ("defaults", "metrics", "training"):
            if not isinstance(record.get(key, {}), dict):
                raise ValueError(f"{key}: must be an object")
        distribution = record.get("training_distribution")
        metadata = cls(
            name=record["name"], version=record["version"],
            features=tuple(record["features"]), defaults=record["defaults"],
            created_at=str(record["created_at"]), metrics=record["metrics"],
            training=record.get("training", {}),
            training_distribution=(None if distribution is None
                                   else TrainingDistribution.from_json(distribution)),
        )
        metadata.validate()
        return metadata
