"""The Redis layout of rows and scores: keys, fields, values and the upsert scripts."""
