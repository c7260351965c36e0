"""``featurestream backfill``: replay history through the feature job's own code.

Reads ``kafka:TOPIC`` (earliest, or ``--start``/``--end``) or files (JSON lines, Avro,
Parquet) and replays them in log order (the job's rule; ``--order time`` sorts by event time
first, with bounded memory), then writes

- ``--training-set OUT.parquet``: for every scored event (``FEATURESTREAM_SCORED_EVENT_TYPES``
  of the built-in events), or for every example of ``--examples FILE``, its point-in-time
  feature values -- the columns of :mod:`featurestream.udfs.offline.training_set`, one per
  model feature of the definitions, null where there is no value; ``--labels FILE`` joins
  ``event_id,label``;
- ``--online-store``: the rows the job would have left in Redis, written there;
- every record that fails, with the job's dead-letter reason, to ``--dead-letters``.

The arguments are declared in ``featurestream/cli/__init__.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from featurestream.backfill.dead_letters import DeadLetterFile
from featurestream.backfill.examples import read_examples
from featurestream.backfill.inputs import (
    InputOptions,
    event_time_reader,
    in_time_order,
    open_inputs,
)
from featurestream.backfill.online_store import check_reachable, write_online_store
from featurestream.backfill.run import Backfill, Counts, Outputs, ReplayConfig
from featurestream.backfill.times import parse_time_ms
from featurestream.cli.train import model_features
from featurestream.errors import UserFacingError
from featurestream.settings import Settings
from featurestream.udfs.contract.records import decoder_for
from featurestream.udfs.contract.schema_registry import registry_for
from featurestream.udfs.definitions.model import Definitions
from featurestream.udfs.offline.training_set import TrainingSetWriter, read_labels
from featurestream.udfs.scoring.vector import FeatureCatalog

SORT_RUN_RECORDS = 200_000  # --order time: records per sorted run held in memory


def backfill_command(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: replay the inputs, write the outputs, print the counts."""
    if (args.examples or args.labels) and not args.training_set:
        raise UserFacingError("--examples and --labels shape the training set: add "
                              "--training-set OUT.parquet")
    definitions = settings.load_definitions()
    if args.online_store:
        check_reachable(settings)
    registry = registry_for(settings.schema_registry)
    options = InputOptions(args.source, args.format,
                           None if args.start is None else parse_time_ms(args.start, "--start"),
                           None if args.end is None else parse_time_ms(args.end, "--end"))
    history = open_inputs(settings, definitions, args.inputs, options)
    event_time = event_time_reader(definitions, {s.name: decoder_for(s, registry)
                                                 for s in definitions.sources})
    records = history.records
    if args.order == "time":
        records = in_time_order(records, event_time, SORT_RUN_RECORDS)
    config = ReplayConfig.from_settings(settings, definitions)
    scored = config.scored
    training, plan = None, None
    if args.training_set:
        if scored is None and not args.examples:
            raise UserFacingError("the definitions have no built-in events source, so no "
                                  "event is scored; give --examples FILE for the training set")
        names, _ = model_features(definitions)
        plan = FeatureCatalog.from_definitions(definitions).plan(names)
    labels = read_labels(args.labels) if args.labels else {}
    examples = None
    if args.examples and plan is not None:
        keys = {key for entity_keys in plan.entities.values() for key in entity_keys}
        examples = read_examples(Path(args.examples), keys)
    with DeadLetterFile(args.dead_letters) as dead, \
            tqdm(total=history.count, unit=" events", unit_scale=True, disable=None,
                 file=sys.stderr) as bar:
        if args.training_set and plan is not None:
            training = TrainingSetWriter(args.training_set, plan.names)
        try:
            run = Backfill(config, Outputs(dead, training, plan, labels, args.online_store),
                           examples, event_time, bar.update)
            rows = run.run(records)
        finally:
            if training is not None:
                training.close()
    online = write_online_store(settings, rows) if args.online_store else 0
    print(summary(run.counts, dead, args, online, definitions))
    return 0


def summary(counts: Counts, dead: DeadLetterFile, args: argparse.Namespace, online: int,
            definitions: Definitions) -> str:
    """The final counts, a line each."""
    lines = [f"backfill: {counts.events:,} events in {counts.seconds:.1f} s "
             f"({counts.events_per_s:,.0f} events/s)"]
    if args.training_set:
        what = (f"{counts.examples:,} examples" if args.examples
                else f"{counts.scored:,} scored events")
        lines.append(f"  training set: {counts.rows_written:,} rows ({what}) -> "
                     f"{args.training_set}")
    if args.online_store:
        entities = ", ".join(e.name for e in definitions.entities)
        lines.append(f"  online store: {online:,} rows ({entities}) written to Redis")
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in dead.by_reason.most_common())
    lines.append(f"  dead letters: {dead.count:,}{f' ({reasons})' if reasons else ''} -> "
                 f"{dead.path}")
    return "\n".join(lines)
