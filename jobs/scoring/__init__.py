"""The scoring job: Kafka events -> LightGBM micro-batches -> scores and dead letters."""
