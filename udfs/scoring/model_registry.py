"""The model registry: a directory of LightGBM text models, each with a JSON sidecar.

Layout: ``<dir>/<name>-v<version>.txt`` (``Booster.model_to_string()``) and
``<dir>/<name>-v<version>.json`` (:class:`~udfs.model_metadata.ModelMetadata`). A version exists
once its sidecar does: :meth:`ModelRegistry.publish` writes the model file first and renames the
sidecar into place last, so a reader never sees half a version. Versions are never overwritten:
the model file is created exclusively (``O_EXCL``), which claims the version, so of two
publishers of one version (two ``train`` runs at once) one gets :class:`VersionTaken`; a
version whose model file exists without a sidecar (being published, or a publish that died) is
skipped by :meth:`ModelRegistry.next_version`.
Beside a version, its compiled predictor (:mod:`udfs.scoring.compiled`), built at publish or at
the first load, and reused by every later load in any process.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

from featurestream.udfs.scoring.compiled import (
    BoosterPredictor,
    Predictor,
    check_choice,
    predictor_for,
)
from featurestream.udfs.scoring.model_metadata import ModelMetadata


class ModelError(Exception):
    """A version cannot be used: missing, unreadable, or inconsistent with its sidecar."""


class VersionTaken(ValueError):
    """The version is published, or claimed by another publish (take the next one)."""


@dataclass(frozen=True)
class LoadedModel:
    """A version ready to score: its sidecar, its booster and what scores with it (compiled,
    or the booster itself)."""

    metadata: ModelMetadata
    booster: lgb.Booster
    predictor: Predictor | None = None  # None: the booster's own predict

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """Scores of a (rows x features) float64 matrix, single-threaded."""
        return (self.predictor or BoosterPredictor(self.booster)).predict(vectors)


class ModelRegistry:
    """The versions of one model name in a directory. ``compiled``: which compiled predictor
    scores its versions (:data:`udfs.scoring.compiled.CHOICES`; ``off``: Booster.predict)."""

    def __init__(self, directory: Path, name: str, compiled: str = "auto") -> None:
        self.directory = directory
        self.name = name
        self.compiled = check_choice(compiled)
        self._sidecar = re.compile(rf"^{re.escape(name)}-v(\d+)\.json$")
        self._claimed = re.compile(rf"^{re.escape(name)}-v(\d+)\.(?:json|txt)$")

    def model_path(self, version: int) -> Path:
        """The LightGBM text file of ``version``."""
        return self.directory / f"{self.name}-v{version}.txt"

    def sidecar_path(self, version: int) -> Path:
        """The JSON sidecar of ``version``."""
        return self.directory / f"{self.name}-v{version}.json"

    def changed_marker(self) -> tuple[int, tuple[int, ...]]:
        """The directory's mtime (ns) and the published versions: either changes when a version
        is published or removed (the versions too, because a poll within the clock tick of a
        publish can see the final mtime without the new sidecar)."""
        try:
            return self.directory.stat().st_mtime_ns, tuple(self.versions())
        except FileNotFoundError:
            return 0, ()

    def versions(self) -> list[int]:
        """The published versions, oldest first."""
        if not self.directory.is_dir():
            return []
        found = (self._sidecar.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def next_version(self) -> int:
        """The version the next :meth:`publish` takes: past every published or claimed one."""
        if not self.directory.is_dir():
            return 1
        found = (self._claimed.match(p.name) for p in self.directory.iterdir())
        return max((int(m.group(1)) for m in found if m), default=0) + 1

    def metadata(self, version: int) -> ModelMetadata:
        """The validated sidecar of ``version`` (ModelError if missing or invalid)."""
        path = self.sidecar_path(version)
        try:
            metadata = ModelMetadata.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{self.name} v{version} is not in the registry {self.directory}"
                             ) from None
        except ValueError as exc:
            raise ModelError(f"{path}: {exc}") from None
        if (metadata.name, metadata.version) != (self.name, version):
            raise ModelError(f"{path} describes {metadata.name} v{metadata.version}")
        return metadata

    def load(self, version: int) -> LoadedModel:
        """The booster and sidecar of ``version``, checked against each other."""
        metadata = self.metadata(version)
        path = self.model_path(version)
        try:
            booster = lgb.Booster(model_file=str(path))
        except (lgb.basic.LightGBMError, OSError) as exc:
            raise ModelError(f"{path}: not a LightGBM model ({exc})") from None
        if booster.feature_name() != list(metadata.features):
            raise ModelError(f"{path}: the booster's features {booster.feature_name()} differ "
                             f"from the sidecar's {list(metadata.features)}")
        return LoadedModel(metadata, booster, predictor_for(path, booster, self.compiled))

    def publish(self, model_text: str, metadata: ModelMetadata) -> Path:
        """Write a new version (model file, then sidecar); returns the sidecar's path.
        :class:`VersionTaken` if the version is published or being published."""
        metadata.validate()
        if metadata.name != self.name:
            raise ValueError(f"metadata names {metadata.name}, registry holds {self.name}")
        if metadata.version in self.versions():
            raise VersionTaken(f"{self.name} v{metadata.version} already exists; versions are "
                               "never overwritten")
        self.directory.mkdir(parents=True, exist_ok=True)
        model_path = self.model_path(metadata.version)
        _claim(model_path, model_text, f"{self.name} v{metadata.version}")
        if self.compiled != "off":  # compiled now, so that no load waits for it
            predictor_for(model_path, lgb.Booster(model_str=model_text), self.compiled)
        sidecar = self.sidecar_path(metadata.version)
        _write_atomically(sidecar, metadata.to_json())
        return sidecar


def _claim(path: Path, text: str, version: str) -> None:
    """Create ``path`` exclusively and write ``text`` (flushed, 0644): claims the version. No
    reader opens it before the sidecar exists; removed again if the write fails."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise VersionTaken(f"{version} is being published by another process (or a publish "
                           f"of it stopped half-way: {path} has no sidecar); take the next "
                           "version") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o644)  # whatever the umask: readers may be other users
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` (not matching any version), flushed to disk,
    readable by every user (the jobs and readers may run as others than the publisher: mkstemp
    makes it 0600), then rename; the temporary file is removed if anything fails."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
