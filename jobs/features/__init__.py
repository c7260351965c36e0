"""The feature job: Kafka events -> state shards of per-entity windows -> Redis rows."""
