"""featurestream: real-time user features from Kafka events, computed in PyFlink, served from Redis.

Layout: ``udfs`` (pure window/codec/key-layout logic), ``jobs`` (Flink jobs), ``serving``
(the reader), ``schemas`` (Avro contracts); this package holds the CLI, the settings and the
embedded local stack.
"""
