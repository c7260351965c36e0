"""featurestream: real-time ML features and scores from Kafka events, computed in PyFlink and
served from Redis.

One distribution namespace over the repository's top-level folders (see ``setup.py``):
``featurestream.udfs`` (``udfs/``, the Flink-free core), ``featurestream.jobs`` (``jobs/``, the
Flink jobs), ``featurestream.serving`` (``serving/``, the reader), ``featurestream.schemas``
(``schemas/``, the Avro contracts), ``featurestream.devstack`` (``devstack/``, the local stack
and producers for development). This folder holds the settings and the CLI.
"""
