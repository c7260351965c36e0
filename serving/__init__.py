"""The reader: a thin, fast HTTP service over the materialized features and scores.

Started with ``featurestream serve`` (:mod:`featurestream.serving.server`); one job per module:
``app`` (factory, lifecycle), ``entities`` (what the definitions declare), ``routes``
(endpoints, auth, metrics, the route table), ``contract`` (the request and answer types),
``validation`` (request checks against them),
``shaping`` (answers and freshness), ``responses`` (JSON and errors), ``openapi`` (the document,
generated from the route table and the types), ``store`` (reads through the cache),
``redis_client`` (pipelined, time-bounded Redis), ``redis_cluster_client`` and
``cluster_routing`` (the same over a Redis Cluster), ``cache``, ``metrics``.
"""
