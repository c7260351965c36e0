"""The domain core (``featurestream.udfs``): everything the jobs, the reader and offline tools
share, free of Flink, so it runs the same inside a TaskManager and in a unit test.

- :mod:`~featurestream.udfs.contract`: the event contract, its codecs and the schema registries;
- :mod:`~featurestream.udfs.features`: feature definitions, sliding windows, the per-entity
  processor, state shards and the feature operator's core;
- :mod:`~featurestream.udfs.scoring`: feature vectors, models and their registry, variants,
  the batch scorer and the score codec;
- :mod:`~featurestream.udfs.wire`: Kafka record frames and dead letters;
- :mod:`~featurestream.udfs.store`: the Redis layout (keys, fields, upsert scripts);
- :mod:`~featurestream.udfs.offline`: training sets, point in time.

Nothing here imports pyflink, the CLI, the local stack or the reader (import-linter checks it).
"""
