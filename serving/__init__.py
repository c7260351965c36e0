"""The reader: a thin, fast HTTP service over the materialized features and scores.

Started with ``featurestream serve`` (:mod:`serving.server`); :func:`serving.app.create_app`
builds the app from the one settings object. One job per module: ``app`` (factory, lifecycle),
``routes`` (endpoints, auth, metrics), ``store`` (reads through the cache), ``redis_client``
(pipelined, time-bounded Redis), ``validation`` (request checks), ``shaping`` (bodies and
freshness), ``cache``, ``metrics``, ``responses`` (JSON and errors), ``openapi``.
"""
