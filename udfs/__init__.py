"""Pure-Python logic shared by the Flink jobs, the reader, backfills and tests.

Window buckets, feature definitions, codecs and the Redis key layout live here, importable
without pyflink, so the same code runs inside Flink and in fast unit tests.
"""
