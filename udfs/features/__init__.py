"""Windowed features: definitions, window buckets, the per-entity processor, state shards and
the feature operator's Flink-free core."""
