"""``featurestream models``: the registry's versions and their rollout, as registry operations.

``promote``, ``canary``, ``shadow`` and ``rollback`` write the model's experiment record
(:mod:`udfs.scoring.experiments`) into the registry directory; a running scoring job applies it
at its next registry poll (``FEATURESTREAM_MODEL_POLL_INTERVAL_MS``) between micro-batches, and
the reader's drift and status read it on their next request: nothing is restarted. While the
registry holds no record, the settings (``FEATURESTREAM_EXPERIMENT``,
``FEATURESTREAM_SHADOW_MODEL``) decide; a record pins its versions, so a newly published version
serves only once promoted or canaried. ``compare`` reads the scores topic and reports each arm.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from confluent_kafka import KafkaException

from featurestream.cli.consume import committed_consumer, topic_partitions, unreachable
from featurestream.errors import UserFacingError
from featurestream.kafka_ranges import PartitionRange, RangeReader, partition_ranges
from featurestream.settings import Settings
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.offline.training import roc_auc
from featurestream.udfs.offline.training_set import TrainingSetError, read_labels
from featurestream.udfs.scoring.experiments import (
    Experiment,
    ExperimentError,
    Rollout,
    Split,
    changing,
    live_rollout,
    read_history,
    record,
    roll_back,
)
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.model_registry import ModelError, ModelRegistry
from featurestream.udfs.scoring.score_codec import ScoreCodec
from featurestream.udfs.scoring.variants import Arm, parse_version, version_label

QUANTILES = (0.1, 0.5, 0.9, 0.99)
STALL_S = 120.0  # without a committed record for this long, an open transaction holds us back


def _registry(settings: Settings, args: argparse.Namespace) -> ModelRegistry:
    return ModelRegistry(settings.effective_models_dir, args.model or settings.model_name)


def _default(settings: Settings, registry: ModelRegistry) -> Split:
    """The settings' split, which applies only to the model the scoring job scores."""
    if registry.name != settings.model_name:
        return Split()
    return Split.parse(settings.experiment, settings.shadow_model)


def _rollout(settings: Settings, registry: ModelRegistry) -> Rollout:
    rollout = live_rollout(registry, _default(settings, registry))
    if rollout.problem is not None:
        raise UserFacingError(rollout.problem)
    return rollout


def _published(registry: ModelRegistry, text: str) -> int:
    """The version ``text`` names, checked to be in the registry with a readable sidecar."""
    try:
        version = parse_version(text)
    except ValueError as exc:
        raise UserFacingError(str(exc)) from None
    published = registry.versions()
    if version not in published:
        known = ", ".join(map(version_label, published)) or "none"
        raise UserFacingError(f"{registry.name} {version_label(version)} is not in the registry "
                              f"{registry.directory} (published: {known}); publish it with "
                              "featurestream train, or pick one of those")
    try:
        registry.metadata(version)
    except ModelError as exc:
        raise UserFacingError(f"{exc}; fix its sidecar or pick another version") from None
    return version


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _describe(rollout: Rollout) -> str:
    """``v1 90%, v2 10%, shadow v3 (exp-4)``."""
    parts = [f"{version_label(v)} {share:.0%}" for v, share in rollout.shares.items()]
    if rollout.shadow is not None:
        parts.append(f"shadow {version_label(rollout.shadow)}")
    source = rollout.experiment or "the settings"
    return f"{', '.join(parts) or 'nothing published'} ({source})"


def _record_line(experiment: Experiment) -> str:
    arms = ", ".join(f"{arm.label}:{arm.weight}" for arm in experiment.arms)
    shadow = f" shadow {version_label(experiment.shadow)}" if experiment.shadow else ""
    return (f"{experiment.id}  {arms}{shadow}  by {experiment.who} at {_when(experiment.when)}"
            + (f"  ({experiment.note})" if experiment.note else ""))


def list_command(settings: Settings, args: argparse.Namespace) -> int:
    """Each version with its creation time, held-out AUC and whether (and how much) it is live."""
    registry = _registry(settings, args)
    rollout = _rollout(settings, registry)
    print(f"{registry.name} in {registry.directory}: live {_describe(rollout)}")
    print(f"{'version':<8} {'created_at':<26} {'auc':>6}  live")
    shares = rollout.shares
    for version in registry.versions():
        try:
            metadata: ModelMetadata | None = registry.metadata(version)
        except ModelError:
            metadata = None
        created = metadata.created_at if metadata else "(unreadable sidecar)"
        auc = metadata.metrics.get("auc_holdout") if metadata else None
        live = (f"{shares[version]:.0%}" if version in shares
                else "shadow" if version == rollout.shadow else "")
        print(f"{version_label(version):<8} {created:<26} "
              f"{'-' if auc is None else f'{auc:.3f}':>6}  {live}".rstrip())
    return 0


def show_command(settings: Settings, args: argparse.Namespace) -> int:
    """A version's sidecar, or (without VERSION) the rollout and its record history."""
    registry = _registry(settings, args)
    if args.version:
        metadata = registry.metadata(_published(registry, args.version))
        share = _rollout(settings, registry).shares.get(metadata.version)
        print(f"{metadata.name} {version_label(metadata.version)}  created {metadata.created_at}"
              f"  live {'no' if share is None else f'{share:.0%}'}")
        print(f"features  {', '.join(metadata.features)}")
        print("metrics   " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metadata.metrics.items())))
        if metadata.defaults:
            print("defaults  " + ", ".join(f"{k} {v:g}" for k, v in metadata.defaults.items()))
        return 0
    rollout = _rollout(settings, registry)
    print(f"{registry.name}: live {_describe(rollout)}")
    history = read_history(registry)
    if not history.records:
        print("no experiment record: the settings decide (FEATURESTREAM_EXPERIMENT, "
              "FEATURESTREAM_SHADOW_MODEL)")
    for number, experiment in enumerate(reversed(history.records)):
        print(("current   " if number == 0 else "previous  ") + _record_line(experiment))
    return 0


def _unwritable(registry: ModelRegistry, exc: OSError) -> UserFacingError:
    return UserFacingError(f"cannot write the experiment record into {registry.directory} "
                           f"({exc.strerror or exc}); let this user write there "
                           "(FEATURESTREAM_MODELS_DIR)")


@contextmanager
def _deciding(registry: ModelRegistry) -> Iterator[None]:
    """The history lock around a command's read-decide-write (its change is decided from the
    record in place when it is written), or the error naming an unwritable registry."""
    with ExitStack() as stack:
        try:
            stack.enter_context(changing(registry))
        except OSError as exc:
            raise _unwritable(registry, exc) from None
        yield


def _write(registry: ModelRegistry, arms: tuple[Arm, ...], shadow: int | None,
           note: str) -> int:
    try:
        written = record(registry, arms, shadow, note)
    except ExperimentError as exc:
        raise UserFacingError(str(exc)) from None
    except OSError as exc:
        raise _unwritable(registry, exc) from None
    print(f"{registry.name}: {_record_line(written)}")
    print("the scoring job applies it at its next registry poll; `featurestream models rollback`"
          " restores the previous split")
    return 0


def promote_command(settings: Settings, args: argparse.Namespace) -> int:
    """Serve VERSION to every user (the shadow stays unless it is VERSION)."""
    registry = _registry(settings, args)
    version = _published(registry, args.version)
    with _deciding(registry):
        shadow = _rollout(settings, registry).shadow
        return _write(registry, (Arm(version, 100),), None if shadow == version else shadow,
                      f"promote {version_label(version)}")


def canary_command(settings: Settings, args: argparse.Namespace) -> int:
    """Serve VERSION to PERCENT of users and the live version with the largest share to the
    rest."""
    if not 1 <= args.percent <= 99:
        raise UserFacingError(f"percent {args.percent} is out of range: give 1 to 99 (100: "
                              "featurestream models promote VERSION)")
    registry = _registry(settings, args)
    version = _published(registry, args.version)
    with _deciding(registry):
        rollout = _rollout(settings, registry)
        others = {v: share for v, share in rollout.shares.items() if v != version}
        if not others:
            raise UserFacingError(f"{version_label(version)} is the only live version: nothing "
                                  "to canary it against; promote another version first")
        base = max(others, key=lambda v: (others[v], v))
        shadow = None if rollout.shadow == version else rollout.shadow
        return _write(registry, (Arm(base, 100 - args.percent), Arm(version, args.percent)),
                      shadow, f"canary {version_label(version)} {args.percent}")


def shadow_command(settings: Settings, args: argparse.Namespace) -> int:
    """Score VERSION on every record beside the served versions (``--off``: no shadow)."""
    if bool(args.version) == args.off:
        raise UserFacingError("give a VERSION to shadow or --off, not both or neither")
    registry = _registry(settings, args)
    with _deciding(registry):
        rollout = _rollout(settings, registry)
        arms = rollout.arms or tuple(Arm(v, 100) for v in rollout.shares)
        if not arms:
            raise UserFacingError(f"no {registry.name} version is published; featurestream "
                                  "train publishes one")
        if args.off:
            return _write(registry, arms, None, "shadow off")
        version = _published(registry, args.version)
        if version in rollout.shares:
            raise UserFacingError(f"{version_label(version)} is served ({_describe(rollout)}); "
                                  "a shadow is a version that is not: shadow another one")
        return _write(registry, arms, version, f"shadow {version_label(version)}")


def rollback_command(settings: Settings, args: argparse.Namespace) -> int:
    """Restore the previous record (the settings after the first one)."""
    registry = _registry(settings, args)
    try:
        restored = roll_back(registry)
    except ExperimentError as exc:
        raise UserFacingError(str(exc)) from None
    except OSError as exc:
        raise _unwritable(registry, exc) from None
    print(f"{registry.name}: live {_describe(_rollout(settings, registry))}")
    if restored is None:
        print("no record left: the settings decide again")
    return 0


@dataclass
class ArmScores:
    """The scores of one arm (a variant, or the shadow), with their labels where known."""

    scores: list[float] = field(default_factory=list)
    labelled: list[tuple[float, bool]] = field(default_factory=list)

    def add(self, score: float, label: bool | None) -> None:
        self.scores.append(score)
        if label is not None:
            self.labelled.append((score, label))

    def auc(self) -> float | None:
        """AUC over the labelled scores (None without both classes)."""
        if not self.labelled:
            return None
        scores, labels = zip(*self.labelled, strict=True)
        try:
            return roc_auc(np.array(labels, dtype=np.int8), np.array(scores))
        except ValueError:
            return None


def arm_scores(scores: Iterable[Mapping[str, Any]], labels: Mapping[str, bool],
               experiment: str | None = None) -> dict[str, ArmScores]:
    """Decoded scores grouped by variant (and ``shadow vN`` for the shadow's scores on the
    same records), those of ``experiment`` only when given (``none``: the settings' split)."""
    arms: dict[str, ArmScores] = {}
    for score in scores:
        if experiment is not None and (score.get("experiment") or "none") != experiment:
            continue
        label = labels.get(score["event_id"])
        arms.setdefault(score["variant"], ArmScores()).add(score["score"], label)
        shadow = score.get("shadow")
        if shadow and shadow.get("score") is not None:
            arms.setdefault(f"shadow {version_label(shadow['version'])}", ArmScores()).add(
                shadow["score"], label)
    return arms


def _read_scores(settings: Settings, topic: str, limit: int) -> Iterator[dict[str, Any]]:
    """The decoded scores of ``topic`` up to its end now (the newest ``limit`` offsets of each
    partition when limit > 0); undecodable records are skipped."""
    codec = ScoreCodec(registry_for(settings.schema_registry), f"{topic}-value")
    consumer = committed_consumer(settings, "models-compare", {"enable.partition.eof": True})
    try:
        partitions = topic_partitions(consumer, topic)
        if not partitions:
            raise UserFacingError(f"topic {topic!r} does not exist on "
                                  f"{settings.kafka_bootstrap}; is the scoring job running?")
        ranges = [PartitionRange(r.partition, max(r.start, r.end - limit) if limit else r.start,
                                 r.end)
                  for r in partition_ranges(consumer, topic, partitions, timeout_s=5)]
        reader = RangeReader(consumer, topic, ranges, STALL_S, lambda r: (
            f"no committed record of {topic} partition {r.partition} for {STALL_S:.0f} s "
            f"before its end offset {r.end}: an open transaction holds it back; retry later"))
        for r in ranges:
            for message in reader.partition(r.partition):
                try:
                    yield codec.decode(message.value() or b"")
                except (ValueError, LookupError, EOFError):
                    continue
    except KafkaException as exc:
        raise unreachable(settings, topic, exc) from None
    finally:
        consumer.close()


def compare_lines(arms: Mapping[str, ArmScores]) -> list[str]:
    """The table: per arm its count, mean, quantiles and AUC (``-`` without labels)."""
    header = (f"{'arm':<12} {'count':>8} {'mean':>7} "
              + " ".join(f"{f'p{round(q * 100)}':>7}" for q in QUANTILES) + f" {'auc':>6} labelled")
    lines = [header]
    for name in sorted(arms):
        arm = arms[name]
        values = np.array(arm.scores)
        quantiles = np.quantile(values, QUANTILES)
        auc = arm.auc()
        lines.append(f"{name:<12} {len(values):>8,} {values.mean():>7.4f} "
                     + " ".join(f"{q:>7.4f}" for q in quantiles)
                     + f" {'-' if auc is None else f'{auc:.3f}':>6} {len(arm.labelled):,}")
    return lines


def compare_command(settings: Settings, args: argparse.Namespace) -> int:
    """Per arm of the scores topic: counts, score distribution and, with --labels, AUC."""
    if args.limit < 0:
        raise UserFacingError(f"--limit {args.limit}: give a count >= 0 (0: every score)")
    try:
        labels = read_labels(args.labels) if args.labels else {}
    except (TrainingSetError, OSError, ValueError) as exc:
        raise UserFacingError(f"labels file {args.labels}: {exc}") from None
    model = args.model or settings.model_name
    scores = (s for s in _read_scores(settings, settings.scores_topic, args.limit)
              if s["model"] == model)
    arms = arm_scores(scores, labels, args.experiment)
    if not arms:
        print(f"no {model} scores on {settings.scores_topic}"
              + (f" of experiment {args.experiment}" if args.experiment else ""))
        return 1
    print("\n".join(compare_lines(arms)))
    return 0
