"""``featurestream drift``: each live version's drift against its training data, as tables.

The numbers are the reader's (``GET /v1/models/{name}/drift``): the same sidecars, the same
Redis buckets and the same report (:mod:`featurestream.serving.drift`), read here with the
CLI's Redis client.
"""

from __future__ import annotations

import argparse
import time

from featurestream.cli.redis_access import redis_client
from featurestream.errors import UserFacingError
from featurestream.serving.drift import (
    DriftQuery,
    ModelDrift,
    Sidecars,
    VersionDrift,
    duration_text,
    unknown_model,
)
from featurestream.settings import MAX_DRIFT_BUCKETS, Settings, SettingsError
from featurestream.udfs.durations import parse_duration_ms
from featurestream.udfs.scoring.model_registry import ModelRegistry

DRIFT_PSI = 0.2  # the usual reading: > 0.2 is drift (the alert rule's threshold)


def drift_command(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: print the drift of ``--model`` (default: the scored model) over
    ``--window`` (default: FEATURESTREAM_DRIFT_WINDOW_MS)."""
    model = args.model or settings.model_name
    settings = _with_window(settings, args.window)
    problem = unknown_model(settings, model)
    if problem is not None:
        raise UserFacingError(f"{problem}, or choose another with --model")
    registry = ModelRegistry(settings.effective_models_dir, model)
    query = DriftQuery.of(settings, Sidecars(registry), int(time.time() * 1000))
    with redis_client(settings) as client:
        pipe = client.pipeline(transaction=False)
        for key in query.all_keys:
            pipe.hgetall(key)
        hashes = [{f.decode(): v.decode() for f, v in reply.items()} for reply in pipe.execute()]
    print(render(query.answer(hashes)), end="")
    return 0


def _with_window(settings: Settings, window: str | None) -> Settings:
    """``settings`` with ``--window`` as the drift window (one line naming the fix if bad)."""
    if window is None:
        return settings
    try:
        window_ms = parse_duration_ms(window)
    except ValueError:
        raise UserFacingError(f"--window {window}: use a duration such as 90s or 5m") from None
    try:
        return settings.replace(drift_window_ms=window_ms)
    except SettingsError:
        raise UserFacingError(
            f"--window {window}: use from {duration_text(settings.drift_bucket_ms)} (one drift "
            f"bucket) up to {MAX_DRIFT_BUCKETS} buckets, e.g. 5m") from None


def render(drift: ModelDrift) -> str:
    """The tables: a header, then per version a line and (with samples) its features."""
    lines = [f"{drift.model}: drift against training over the last "
             f"{duration_text(drift.window_ms)} (PSI > {DRIFT_PSI}: drift)"]
    if not drift.versions:
        lines.append("no live version and no samples in the window")
    for version in drift.versions:
        lines += ["", *_version(version)]
    return "\n".join(lines) + "\n"


def _version(v: VersionDrift) -> list[str]:
    name = f"v{v.version}{' (live)' if v.live else ''}"
    if not v.samples:
        return [f"{name}: {v.message}"]
    width = max(len("feature"), *(len(f.feature) for f in v.features))
    return [
        f"{name}: {v.samples:,} samples, score PSI {_psi(v.score_psi)}{_flag(v.score_psi)}",
        f"  {'feature':<{width}}  {'PSI':>7}  {'null rate':>9}  {'out of range':>12}",
        *(f"  {f.feature:<{width}}  {_psi(f.psi):>7}  {_rate(f.null_rate):>9}  "
          f"{_rate(f.out_of_range_rate):>12}{_flag(f.psi)}" for f in v.features)]


def _psi(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _flag(psi: float | None) -> str:
    return "  <- drift" if psi is not None and psi > DRIFT_PSI else ""


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
