"""``featurestream backfill``: replay an event history through the feature job's own code.

History comes from a Kafka topic (:mod:`.kafka`) or from files (:mod:`.files`: JSON lines,
Avro container files, Parquet) as :class:`~.records.HistoryRecord` values: the source a record
feeds, its value bytes as the job would read them from Kafka, and where it came from. The
records are replayed (:mod:`.run`) by :class:`featurestream.udfs.offline.replay.Replay`, which
decodes them with the job's decoders, so bad records get the job's own dead-letter reasons
(:mod:`.dead_letters` writes them to a file).
"""
