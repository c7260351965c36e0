"""The ``featurestream`` command: one sub-command per capability.

Each sub-command is implemented by a handler ``handler(settings, args) -> int`` in its own module;
this file only wires arguments to handlers, resolves the settings once and turns expected errors
into one clear line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from featurestream.errors import UserFacingError
from featurestream.settings import Settings, SettingsError

Handler = Callable[[Settings, argparse.Namespace], int]


def _lazy(path: str) -> Handler:
    """Import ``module:function`` only when the sub-command runs (keeps start-up fast)."""
    module_name, func_name = path.split(":")

    def run(settings: Settings, args: argparse.Namespace) -> int:
        handler: Handler = getattr(importlib.import_module(module_name), func_name)
        return handler(settings, args)

    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(
        prog="featurestream",
        description="Real-time features: Kafka events -> PyFlink windows -> Redis.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the embedded local stack (Kafka, Redis, Flink)")
    up.add_argument("--taskmanagers", type=int, metavar="N",
                    help="run N Flink TaskManagers, 2 slots each (default: "
                    "FEATURESTREAM_TASKMANAGERS, 1)")
    up.set_defaults(handler=_lazy("featurestream.devstack.commands:up"))
    down = sub.add_parser("down", help="stop the embedded local stack")
    down.set_defaults(handler=_lazy("featurestream.devstack.commands:down"))
    status = sub.add_parser("status", help="show each component: up/down, address, jobs")
    status.set_defaults(handler=_lazy("featurestream.devstack.commands:status"))

    submit = sub.add_parser("submit", help="submit a job to the configured Flink cluster")
    submit.add_argument("job", choices=["features", "scoring"], help="which job to submit")
    submit.add_argument("--from-savepoint", metavar="PATH",
                        help="resume from this savepoint (printed by `featurestream stop`)")
    submit.add_argument("--reset-source-positions", action="store_true",
                        help="with --from-savepoint: keep the windows, drop the Kafka positions "
                        "and read every partition from its earliest offset (after the broker "
                        "lost its logs)")
    submit.add_argument("--ship-deps", action="store_true",
                        help="for TaskManagers without this package's dependencies: ship them "
                        "with the job (pinned wheels, built once and cached; needs pip and a "
                        "package index here, none on the cluster)")
    submit.set_defaults(handler=_lazy("featurestream.cli.submit:submit"))

    stop = sub.add_parser("stop", help="stop a running job (with --savepoint: resumable)")
    stop.add_argument("job", choices=["features", "scoring"], help="which job to stop")
    stop.add_argument("--savepoint", action="store_true",
                      help="take a savepoint first and print its path")
    stop.set_defaults(handler=_lazy("featurestream.cli.submit:stop"))

    rematerialize = sub.add_parser(
        "rematerialize", help="rewrite every entity's row in Redis from the feature job's state "
        "(after Redis lost its data): stop with a savepoint, resubmit, wait for the rows")
    rematerialize.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                               help="how long to wait for the rewritten rows (default 600)")
    rematerialize.set_defaults(handler=_lazy("featurestream.cli.rematerialize:"
                                             "rematerialize_command"))

    produce = sub.add_parser("produce", help="send events from a JSON-lines file to Kafka")
    produce.add_argument("file", help="JSON-lines file, one event object per line")
    produce.add_argument("--format", choices=["avro", "json"], default="avro")
    produce.add_argument("--topic", help="topic (default: the events topic setting)")
    produce.set_defaults(handler=_lazy("featurestream.devstack.producing:produce_command"))

    generate = sub.add_parser("generate", help="emit a realistic synthetic event stream")
    generate.add_argument("--events", type=int, default=10_000, help="how many events")
    generate.add_argument("--users", type=int, default=1_000, help="how many users")
    generate.add_argument("--rate", type=float, default=0.0,
                          help="events per second (0 = as fast as possible)")
    generate.add_argument("--format", choices=["avro", "json"], default="avro")
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument("--out", help="write JSON lines to this file instead of Kafka")
    generate.add_argument("--labels", metavar="FILE",
                          help="also write event_id,label (the fraud label) of every event as "
                          "CSV, for `featurestream train --from ... --labels FILE`")
    generate.add_argument("--skip", type=int, default=0, metavar="N",
                          help="start N events into the stream: with the --seed and --users of "
                          "an earlier run, its continuation (same users and catalogue)")
    generate.add_argument("--shift-amount", type=float, metavar="FACTOR",
                          help="drift on purpose: multiply the purchase amounts of "
                          "--shift-users of the users by FACTOR (e.g. 2)")
    generate.add_argument("--shift-users", type=float, metavar="SHARE",
                          help="the share of users shifted, the same ones for a --seed "
                          "(default 0.1)")
    generate.add_argument("--shift-after", type=int, metavar="N",
                          help="start the shift after N events (default 0: from the start)")
    generate.set_defaults(handler=_lazy("featurestream.devstack.producing:generate_command"))

    show = sub.add_parser("features", help="print an entity's materialized features from Redis")
    show.add_argument("ids", nargs="*", help="entity ids to show (default: a few)")
    show.add_argument("--entity", default="user", help="a declared entity (default: user)")
    show.add_argument("--limit", type=int, default=5)
    show.set_defaults(handler=_lazy("featurestream.cli.show:show_features"))

    plan = sub.add_parser("plan", help="validate the definitions and show what resubmitting "
                          "the feature job would change (added, changed, removed, refused)")
    plan.add_argument("--definitions", metavar="FILE_OR_MODULE",
                      help="definitions to plan (default: FEATURESTREAM_DEFINITIONS)")
    plan.set_defaults(handler=_lazy("featurestream.cli.plan:plan_command"))

    drift = sub.add_parser("drift", help="each live model version's drift against its "
                           "training data: PSI, null and out-of-range rates per feature, and "
                           "the score's PSI")
    drift.add_argument("--model", help="the model (default: FEATURESTREAM_MODEL_NAME)")
    drift.add_argument("--window", metavar="DURATION",
                       help="how far back, e.g. 1m or 5m (default: FEATURESTREAM_DRIFT_WINDOW_MS)")
    drift.set_defaults(handler=_lazy("featurestream.cli.drift:drift_command"))

    serve = sub.add_parser("serve", help="run the reader: HTTP over the features and scores "
                           "(FEATURESTREAM_SERVE_* settings)")
    serve.set_defaults(handler=_lazy("featurestream.serving.server:serve"))

    train = sub.add_parser("train", help="train the scoring model (on --from PATH, else a "
                           "generated history) and publish its next version")
    train.add_argument("--from", dest="source", metavar="PATH",
                       help="a training set or exported scores (Parquet or CSV)")
    train.add_argument("--history", nargs="+", metavar="INPUT",
                       help="an event log to replay into the training set: kafka:TOPIC or "
                       "JSON-lines/Avro/Parquet files (with --labels)")
    train.add_argument("--labels", metavar="FILE",
                       help="event_id,label CSV for rows of --from (or --history) without a label")
    train.add_argument("--events", type=int, help="history length (default 300,000)")
    train.add_argument("--users", type=int, help="(default 2,000)")
    train.add_argument("--seed", type=int, help="generator and training seed (default 1)")
    train.add_argument("--rounds", type=int, help="boosting rounds (default 200)")
    train.set_defaults(handler=_lazy("featurestream.cli.train:train_command"))

    backfill = sub.add_parser("backfill", help="replay history (kafka:TOPIC or JSON-lines, "
                              "Avro, Parquet files) through the feature job's code: a training "
                              "set, the online store, dead letters")
    backfill.add_argument("inputs", nargs="+", metavar="INPUT",
                          help="kafka:TOPIC, or a file: .jsonl, .avro, .parquet (or --format)")
    backfill.add_argument("--source", help="the source the records are (default: the one "
                          "reading the topic; for files, the built-in events source)")
    backfill.add_argument("--format", choices=["jsonl", "avro", "parquet"],
                          help="the files' format (default: by extension)")
    backfill.add_argument("--start", help="Kafka records from this time: ISO 8601 or epoch ms")
    backfill.add_argument("--end", help="Kafka records before this time: ISO 8601 or epoch ms")
    backfill.add_argument("--order", choices=["log", "time"], default="log",
                          help="log: as read, the job's order (default); time: sorted by event "
                          "time first (bounded memory)")
    backfill.add_argument("--training-set", metavar="OUT.parquet",
                          help="write the point-in-time training set here")
    backfill.add_argument("--examples", metavar="FILE",
                          help="Parquet or CSV of examples (entity key columns, ts, optional "
                          "label): a training row each instead of one per scored event")
    backfill.add_argument("--labels", metavar="FILE", help="CSV (or Parquet) event_id,label")
    backfill.add_argument("--online-store", action="store_true",
                          help="write the rows as of the end to Redis (FEATURESTREAM_REDIS_URL)")
    backfill.add_argument("--dead-letters", metavar="FILE",
                          default="backfill-dead-letters.jsonl",
                          help="JSON lines of the records that failed "
                          "(default backfill-dead-letters.jsonl)")
    backfill.set_defaults(handler=_lazy("featurestream.cli.backfill:backfill_command"))

    verify = sub.add_parser("verify", help="replay the event log offline and compare the "
                            "scores' vectors and the Redis rows with it (0 mismatches expected)")
    verify.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="kafka:TOPIC or files as for backfill (default: every source topic "
                        "of the definitions)")
    verify.add_argument("--no-scores", action="store_true", help="skip the scores check")
    verify.add_argument("--no-rows", action="store_true", help="skip the Redis rows check")
    verify.add_argument("--examples", type=int, default=5, help="mismatches shown per check")
    verify.add_argument("--dead-letters", metavar="FILE", default="verify-dead-letters.jsonl",
                        help="JSON lines of the records that failed in the replay")
    verify.set_defaults(handler=_lazy("featurestream.cli.verify:verify_command"))

    export = sub.add_parser("export", help="write a topic to a file (scores: Parquet with the "
                            "vectors, model version and variant of each score)")
    export.add_argument("what", choices=["scores"])
    export.add_argument("--out", required=True, metavar="FILE.parquet")
    export.add_argument("--topic", help="topic (default: the scores topic setting)")
    export.set_defaults(handler=_lazy("featurestream.cli.export:export_command"))

    consume = sub.add_parser("consume", help="tail a topic for humans (scores: decoded; "
                             "DLQ topics: error headers)")
    consume.add_argument("topic", choices=["scores", "scores.dlq", "events.dlq"])
    consume.add_argument("--limit", type=int, default=0, help="stop after N records (0: follow)")
    consume.add_argument("--from-beginning", action="store_true",
                         help="start at the oldest record instead of the newest")
    consume.add_argument("--timeout", type=float, default=0,
                         help="stop after this many seconds without a record (0: never)")
    consume.add_argument("--features", action="store_true", help="print scores' feature values")
    consume.set_defaults(handler=_lazy("featurestream.cli.consume:consume_command"))

    models = sub.add_parser("models", help="the registry's versions and their rollout: list, "
                            "show, promote, canary, shadow, rollback (picked up by the running "
                            "scoring job and reader), compare")
    models.add_argument("--model", help="the model (default: FEATURESTREAM_MODEL_NAME)")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    handlers = "featurestream.cli.models:"
    actions.add_parser("list", help="versions: created_at, AUC, live share").set_defaults(
        handler=_lazy(handlers + "list_command"))
    show_model = actions.add_parser("show", help="a version's sidecar, or the rollout history")
    show_model.add_argument("version", nargs="?", metavar="VERSION")
    show_model.set_defaults(handler=_lazy(handlers + "show_command"))
    promote = actions.add_parser("promote", help="serve VERSION to every user")
    promote.add_argument("version", metavar="VERSION")
    promote.set_defaults(handler=_lazy(handlers + "promote_command"))
    canary = actions.add_parser("canary", help="serve VERSION to PERCENT of users, the live "
                                "version to the rest")
    canary.add_argument("version", metavar="VERSION")
    canary.add_argument("percent", type=int, metavar="PERCENT", help="1 to 99")
    canary.set_defaults(handler=_lazy(handlers + "canary_command"))
    shadow = actions.add_parser("shadow", help="score VERSION beside the served ones, unserved")
    shadow.add_argument("version", nargs="?", metavar="VERSION")
    shadow.add_argument("--off", action="store_true", help="no shadow")
    shadow.set_defaults(handler=_lazy(handlers + "shadow_command"))
    actions.add_parser("rollback", help="restore the previous rollout").set_defaults(
        handler=_lazy(handlers + "rollback_command"))
    compare = actions.add_parser("compare", help="per arm of the scores topic: counts, score "
                                 "quantiles, AUC with --labels")
    compare.add_argument("--labels", metavar="FILE", help="event_id,label CSV (generate --labels)")
    compare.add_argument("--limit", type=int, default=0, metavar="N",
                         help="the newest N records of each partition (0: all)")
    compare.add_argument("--experiment", metavar="ID",
                         help="only the scores of this record (none: the settings' split)")
    compare.set_defaults(handler=_lazy(handlers + "compare_command"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``featurestream`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return args.handler(settings, args)
    except (SettingsError, UserFacingError) as exc:
        print(f"featurestream: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("featurestream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
