"""The Flink jobs (``featurestream.jobs``): thin PyFlink adapters around the core in
``featurestream.udfs``.

- :mod:`~featurestream.jobs.features`: the feature job (entry point, graph, operators);
- :mod:`~featurestream.jobs.scoring`: the scoring job;
- shared I/O: Kafka sources and sinks (``kafka_io``), Redis writers, the execution environment,
  the job jar built from ``java/``.
"""

# The jobs' names on the cluster (``featurestream stop`` finds a running job by its name).
JOB_NAMES = {"features": "featurestream-features", "scoring": "featurestream-scoring"}
