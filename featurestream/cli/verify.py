"""``featurestream verify``: replay the event log offline and compare it with what ran online.

The log (by default every source topic of the definitions, earliest to the end offsets at start;
or ``INPUT...`` as ``featurestream backfill`` takes them) goes through the feature job's own
code (:class:`featurestream.backfill.run.Backfill`), then two checks
(:mod:`featurestream.udfs.offline.consistency`):

- the vector recorded in every score of the scores topic against the vector assembled from the
  rows the replay captured for the same event, with the scored version's defaults;
- every online row in Redis against the replay's row of the entity at the row's ``as_of``.

Zero mismatches is the expected count (the same code on the same log). Scored events that
arrived behind the watermark are counted apart: their rows can depend on when it moved
(docs/point-in-time.md). Exit status 1 when any other value differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from tqdm import tqdm

from featurestream.backfill.dead_letters import DeadLetterFile
from featurestream.backfill.inputs import InputOptions, open_inputs
from featurestream.backfill.run import Backfill, Outputs, ReplayConfig
from featurestream.backfill.scored import ScoredEvent
from featurestream.cli.export import export_scores
from featurestream.cli.redis_access import redis_client
from featurestream.settings import Settings
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.offline.consistency import Check, RowCheck, ScoreCheck
from featurestream.udfs.offline.replay import Replay
from featurestream.udfs.scoring.model_metadata import ModelMetadata
from featurestream.udfs.scoring.model_registry import ModelError, ModelRegistry
from featurestream.udfs.scoring.vector import FeatureCatalog, UnknownFeature, VectorPlan
from featurestream.udfs.store.redis_layout import decode_row, hash_untagged
from featurestream.udfs.wire.dead_letters import Problem

_SCAN_BATCH = 1_000


class RecordedScore:
    """A score as exported: its event, model version and recorded vector."""

    __slots__ = ("event_id", "features", "version")

    def __init__(self, event_id: str, version: int, features: dict[str, float]) -> None:
        self.event_id, self.version, self.features = event_id, version, features


def recorded_scores(settings: Settings, registry: ModelRegistry) -> list[RecordedScore]:
    """Every score of the scores topic, with the features its model version names."""
    names: dict[int, tuple[str, ...]] = {}
    scores = []
    with tempfile.TemporaryDirectory(prefix="featurestream-verify-") as tmp:
        path = Path(tmp) / "scores.parquet"
        export_scores(settings, settings.scores_topic, path)
        if not path.exists():
            return []
        for row in pq.read_table(path).to_pylist():
            version = int(row["version"])
            if version not in names:
                names[version] = registry.load(version).metadata.features
            scores.append(RecordedScore(row["event_id"], version,
                                        {name: row[name] for name in names[version]}))
    return scores


class ReplayedVectors:
    """The replay's vector of each recorded score's event (per model version)."""

    def __init__(self, definitions: Definitions, registry: ModelRegistry,
                 wanted: set[str]) -> None:
        self._catalog = FeatureCatalog.from_definitions(definitions)
        self._registry = registry
        self._wanted = wanted
        self._versions: dict[int, tuple[ModelMetadata, VectorPlan | str]] = {}
        self.events: dict[str, ScoredEvent] = {}

    def keep(self, scored: ScoredEvent) -> None:
        """Backfill's hook: keep the scored events some score names (the first of a repeat)."""
        if scored.event.event_id in self._wanted:
            self.events.setdefault(scored.event.event_id, scored)

    def vector(self, event_id: str, version: int) -> tuple[dict[str, Any] | None, bool]:
        """The replayed vector (None: the event is not in the log read) and whether it was
        captured late."""
        scored = self.events.get(event_id)
        if scored is None:
            return None, False
        model, plan = self._version(version)
        if isinstance(plan, str):
            return {"<vector>": plan}, scored.late
        vector = plan.assemble(model.defaults, scored.event, scored.rows,
                               plan.entity_ids(scored.event))
        if isinstance(vector, Problem):
            return {"<vector>": f"the replay refuses it: {vector.message}"}, scored.late
        return dict(zip(model.features, vector, strict=True)), scored.late

    def _version(self, version: int) -> tuple[ModelMetadata, VectorPlan | str]:
        """A version's sidecar and vector plan (or why the definitions cannot feed it), loaded
        once."""
        known = self._versions.get(version)
        if known is None:
            model = self._registry.load(version).metadata
            try:
                plan: VectorPlan | str = self._catalog.plan(model.features,
                                                            model.feature_definitions)
            except UnknownFeature as exc:
                plan = f"the definitions cannot feed v{version}: {exc}"
            known = self._versions[version] = (model, plan)
        return known


def online_rows(settings: Settings, definitions: Definitions) -> Iterator[tuple[str, dict]]:
    """Every online row of the definitions' entities in Redis, by state key."""
    prefix = settings.redis_key_prefix
    with redis_client(settings) as client:
        for entity in definitions.entities:
            keys: list[bytes] = []
            for key in client.scan_iter(match=f"{prefix}{entity.name}:*", count=_SCAN_BATCH):
                keys.append(key)
                if len(keys) == _SCAN_BATCH:
                    yield from _read(client, keys, len(prefix), settings.redis_cluster)
                    keys = []
            yield from _read(client, keys, len(prefix), settings.redis_cluster)


def _read(client: Any, keys: list[bytes], cut: int, cluster: bool
          ) -> Iterator[tuple[str, dict]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    for key, fields in zip(keys, pipe.execute(), strict=True):
        if fields:
            entity, _, tagged = key.decode()[cut:].partition(":")
            yield f"{entity}:{hash_untagged(tagged, cluster)}", decode_row(fields)


def check_rows(settings: Settings, definitions: Definitions, replay: Replay) -> RowCheck:
    """Redis rows against the replay's at their as_of."""
    check = RowCheck()
    for key, row in online_rows(settings, definitions):
        as_of, version = row.get("as_of"), row.get("version")
        if not isinstance(as_of, int) or not isinstance(version, int):
            check.not_compared["the online row has no as_of/version"] += 1
            continue
        check.add(key, row, replay.row_at(key, as_of, version))
    return check


def verify_command(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: replay, compare, print the findings; 1 when values differ."""
    definitions = settings.load_definitions()
    registry = ModelRegistry(settings.effective_models_dir, settings.model_name)
    scores = [] if args.no_scores else recorded_scores(settings, registry)
    inputs = args.inputs or [f"kafka:{s.topic}" for s in definitions.sources]
    history = open_inputs(settings, definitions, inputs, InputOptions())
    vectors = ReplayedVectors(definitions, registry, {s.event_id for s in scores})
    with DeadLetterFile(args.dead_letters) as dead, \
            tqdm(total=history.count, unit=" events", unit_scale=True, disable=None,
                 file=sys.stderr, desc="replay") as bar:
        config = dataclasses.replace(ReplayConfig.from_settings(settings, definitions),
                                     expire=False)  # rows are compared at their own as_of
        run = Backfill(config, Outputs(dead, scored=vectors.keep), progress=bar.update)
        run.run(history.records)
    print(f"verify: replayed {run.counts.events:,} events of {', '.join(inputs)} in "
          f"{run.counts.seconds:.1f} s ({dead.count:,} dead letters -> {dead.path})")
    failed = False
    if not args.no_scores:
        check = ScoreCheck()
        for score in scores:
            try:
                replayed, late = vectors.vector(score.event_id, score.version)
            except ModelError as exc:
                replayed, late = {"<vector>": str(exc)}, False
            check.add(score.event_id, score.features, replayed, late)
        print(_report("scores", check.exact, args.examples))
        if check.late.compared:
            print(_report("  late scored events (may differ)", check.late, args.examples))
        if check.missing:
            print(f"  {check.missing:,} scores of events not in the replayed log")
        failed |= check.exact.mismatched > 0
    if not args.no_rows:
        rows = check_rows(settings, definitions, run.replay)
        print(_report("rows", rows, args.examples))
        failed |= rows.mismatched > 0
    return 1 if failed else 0


def _report(what: str, check: Check, examples: int) -> str:
    lines = [f"{what}: {check.compared:,} compared, {check.mismatched:,} differ"]
    lines += [f"  {feature}: {n:,} differ" for feature, n in check.by_feature.most_common()]
    lines += [f"  e.g. {m.where}: {m.feature} online {m.online!r}, offline {m.offline!r}"
              for m in check.examples[:examples]]
    lines += [f"  not compared: {reason}: {n:,}"
              for reason, n in _sorted(check.not_compared)]
    return "\n".join(lines)


def _sorted(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: -item[1])
