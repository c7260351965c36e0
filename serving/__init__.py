"""The reader: a thin, fast HTTP service over the materialized features and scores.

Started with ``featurestream serve`` (:mod:`featurestream.serving.server`); one job per module:
``app`` (factory, lifecycle), ``routes`` (endpoints, auth, metrics), ``store`` (reads through the
cache), ``redis_client`` (pipelined, time-bounded Redis), ``validation`` (request checks),
``shaping`` (bodies and freshness), ``cache``, ``metrics``, ``responses`` (JSON and errors),
``openapi``.
"""
