"""Compiled predictors: a version's trees compiled to machine code once, cached beside it.

``Booster.predict`` takes about 44 µs per single-row call and 8 ms per 1,000 rows on the model
``featurestream train`` publishes; lleaves (LLVM) scores the same rows in about 17 µs and
1.2 ms, equal to 1e-15 (docs/performance.md, "Compiled predictors"; ``python -m bench
predictors``). Treelite/TL2cgen and ONNX Runtime were measured and rejected: slower than lleaves,
and neither equal to LightGBM (7e-2 and 0.82).

The artefact is ``<name>-v<N>.lleaves-<host>.<sha>.o`` beside the model file: LLVM object code
for this CPU. ``<host>`` digests the CPU, its features and the lleaves and llvmlite versions, so
another machine or an upgrade compiles its own; ``<sha>`` is the start of the file's SHA-256,
checked before LLVM reads the bytes, because LLVM aborts the whole process on a malformed
object file. It is written under a temporary name and renamed, so concurrent loads (two scoring
tasks, the reader) at worst compile twice, never read half a file. Every compiled predictor is
checked against ``Booster.predict`` on probe vectors (each split threshold, the floats either
side of it, NaN) before it is used; any failure -- lleaves missing, a compile error, a corrupt
artefact, a difference above :data:`TOLERANCE` -- costs one log line and the booster scores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # the settings import CHOICES: no LightGBM for them
    import lightgbm as lgb

# ``auto``: the measured winner (lleaves); ``off``: always Booster.predict; or a backend's name.
CHOICES = ("auto", "off", "lleaves")
TOLERANCE = 1e-9  # the largest |compiled - Booster.predict| accepted on the probe vectors
_PROBE_ROWS = 512
_CHECKSUM_DIGITS = 16
_ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float, widened)

log = logging.getLogger(__name__)
_unusable: set[Path] = set()  # model files whose compiled form failed in this process


class Predictor(Protocol):
    """Scores of a (rows x features) float64 matrix, single-threaded."""

    @property
    def backend(self) -> str: ...

    def predict(self, matrix: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class BoosterPredictor:
    """LightGBM's own predict: the reference, and the fallback."""

    booster: lgb.Booster
    backend: str = "lightgbm"

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(matrix, num_threads=1))  # dense: no copy


@dataclass(frozen=True)
class LleavesPredictor:
    """A version compiled by lleaves (its ``lleaves.Model``, compiled)."""

    model: Any
    backend: str = "lleaves"

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        # LightGBM reads |x| <= kZeroThreshold as 0 before any tree (Predictor's dense rows);
        # lleaves compares x itself, so -1e-35, on a split at -1e-35, goes right in one and left
        # in the other. And lleaves needs a C-contiguous float64 matrix: it ravels any other into
        # a temporary that it then points into.
        zeroed = np.ascontiguousarray(np.where(np.abs(matrix) <= _ZERO_THRESHOLD, 0.0, matrix),
                                      dtype=np.float64)
        return np.asarray(self.model.predict(zeroed, n_jobs=1))


class CompileError(Exception):
    """This version cannot be compiled, or its compiled form does not match the booster."""


def check_choice(choice: str) -> str:
    """``choice`` if it is one of :data:`CHOICES` (ValueError naming them otherwise)."""
    if choice not in CHOICES:
        raise ValueError(f"compiled predictor {choice!r}: use one of {', '.join(CHOICES)}")
    return choice


def predictor_for(model_path: Path, booster: lgb.Booster, choice: str) -> Predictor:
    """The predictor of the version whose model file is ``model_path``: compiled as ``choice``
    says (from its cached artefact, compiled and cached first if there is none), else the
    booster's own."""
    if check_choice(choice) == "off" or model_path in _unusable:
        return BoosterPredictor(booster)
    try:
        predictor = _lleaves(model_path)
        difference = _max_difference(predictor, booster, model_path)
        if not difference <= TOLERANCE:
            raise CompileError(f"differs from Booster.predict by {difference:.3g} > "
                               f"{TOLERANCE:g} on the probe vectors")
    except CompileError as exc:
        # Once per process: a reload of the version must not compile (or log) again.
        _unusable.add(model_path)
        log.warning("%s: scoring with Booster.predict (lleaves: %s)", model_path.name, exc)
        return BoosterPredictor(booster)
    return predictor


def artefacts(model_path: Path) -> list[Path]:
    """This host's compiled artefacts of the version at ``model_path`` (valid or not)."""
    # Model names are letters, digits and underscores: nothing a glob would read as a pattern.
    return sorted(model_path.parent.glob(f"{model_path.stem}.lleaves-{_host_key()}.*.o"))


def _lleaves(model_path: Path) -> LleavesPredictor:
    """The version compiled by lleaves: from a valid cached artefact, else compiled now (and
    cached for every later load, in this process or another)."""
    try:
        import lleaves
    except ImportError as exc:
        raise CompileError(f"not installed ({exc})") from None
    for artefact in artefacts(model_path):
        if _intact(artefact):
            return LleavesPredictor(_compiled(lleaves, model_path, artefact))
        log.warning("%s: corrupt compiled artefact (checksum differs) removed; recompiling",
                    artefact.name)
        artefact.unlink(missing_ok=True)
    # lleaves loads its cache file if it exists and writes it otherwise: a name nothing has.
    tmp = model_path.parent / f".{model_path.stem}.lleaves.{uuid.uuid4().hex}.tmp"
    try:
        model = _compiled(lleaves, model_path, tmp)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:_CHECKSUM_DIGITS]
        os.replace(tmp, model_path.parent / f"{model_path.stem}.lleaves-{_host_key()}.{digest}.o")
    except OSError as exc:
        raise CompileError(f"cannot write the artefact ({exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return LleavesPredictor(model)


def _compiled(lleaves: Any, model_path: Path, cache: Path) -> Any:
    """``lleaves.Model`` of the model file, compiled (or loaded from ``cache`` if it exists)."""
    try:
        model = lleaves.Model(model_file=str(model_path))
        model.compile(cache=str(cache))
    except Exception as exc:  # lleaves and LLVM raise many kinds; every one means "cannot"
        raise CompileError(f"{type(exc).__name__}: {exc}") from None
    return model


def _intact(artefact: Path) -> bool:
    """Whether the artefact's bytes still hash to the checksum in its name."""
    expected = artefact.stem.rsplit(".", 1)[-1]
    try:
        return hashlib.sha256(artefact.read_bytes()).hexdigest()[:_CHECKSUM_DIGITS] == expected
    except OSError:
        return False


def _host_key() -> str:
    """What a compiled artefact is only valid for: this CPU and the compiler's versions."""
    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot detect them here
        features = ""
    versions = [package_metadata.version(p) for p in ("lleaves", "llvmlite")]
    text = " ".join([llvm.get_process_triple(), llvm.get_host_cpu_name(), features, *versions])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _max_difference(predictor: Predictor, booster: lgb.Booster, model_path: Path) -> float:
    """max |predictor - booster| on :func:`probe_vectors` of the model."""
    probes = probe_vectors(model_path.read_text(encoding="utf-8"), booster.num_feature())
    try:
        compiled = predictor.predict(probes)
    except Exception as exc:  # a compiled model that cannot score is one that cannot be used
        raise CompileError(f"{type(exc).__name__}: {exc}") from None
    reference = np.asarray(booster.predict(probes, num_threads=1))
    if compiled.shape != reference.shape:
        return float("inf")
    same_nan = np.isnan(compiled) == np.isnan(reference)
    if not same_nan.all():
        return float("inf")
    finite = ~np.isnan(reference)
    return float(np.max(np.abs(compiled[finite] - reference[finite]), initial=0.0))


def probe_vectors(model_text: str, features: int, rows: int = _PROBE_ROWS) -> np.ndarray:
    """Vectors where compiled trees most easily part from LightGBM's: each value is a split
    threshold of its feature, the float just above or below one, NaN (missing), 0, or a random
    value. Seeded: the same model gets the same probes."""
    thresholds: list[list[float]] = [[] for _ in range(features)]
    split_features: list[int] = []
    for line in model_text.splitlines():
        if line.startswith("split_feature="):
            split_features = [int(v) for v in line.split("=", 1)[1].split()]
        elif line.startswith("threshold=") and split_features:
            for feature, value in zip(split_features, line.split("=", 1)[1].split(), strict=False):
                if 0 <= feature < features:
                    thresholds[feature].append(float(value))
            split_features = []
    rng = np.random.default_rng(0)
    matrix = rng.normal(0.0, 100.0, size=(rows, features))
    kind = rng.integers(0, 6, size=(rows, features))
    for j, values in enumerate(thresholds):
        if not values:
            continue
        picked = rng.choice(np.asarray(values), size=rows)
        column = matrix[:, j]
        column[kind[:, j] == 0] = picked[kind[:, j] == 0]
        column[kind[:, j] == 1] = np.nextafter(picked, np.inf)[kind[:, j] == 1]
        column[kind[:, j] == 2] = np.nextafter(picked, -np.inf)[kind[:, j] == 2]
    matrix[kind == 3] = np.nan
    matrix[kind == 4] = 0.0
    return matrix
