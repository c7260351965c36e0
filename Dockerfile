# A Flink 2.0.2 image with Python 3.11 and featurestream installed: the JobManager and the
# TaskManagers of docker-compose.yml run it, and so can your own cluster.
# One Flink version everywhere: this image, pyproject.toml (apache-flink==2.0.2) and compose.
FROM flink:2.0.2-scala_2.12-java17 AS flink

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless procps \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 FLINK_HOME=/opt/flink PATH=/opt/flink/bin:$PATH
COPY --from=flink /opt/flink /opt/flink
COPY --from=flink /docker-entrypoint.sh /docker-entrypoint.sh
RUN groupadd --system flink && useradd --system --gid flink --home-dir /opt/flink flink

WORKDIR /opt/featurestream
# setup.py installs the folders below under one namespace (featurestream.udfs, .jobs, ...).
COPY pyproject.toml setup.py README.md ./
COPY featurestream featurestream
COPY udfs udfs
COPY jobs jobs
COPY schemas schemas
COPY serving serving
COPY devstack devstack
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir . \
 && site=$(/opt/venv/bin/python -c "import pyflink, os; print(os.path.dirname(pyflink.__file__))") \
 && cp "$site/lib/flink-connector-kafka.jar" "$site/lib/kafka-clients.jar" /opt/flink/lib/ \
 && chown -R flink:flink /opt/flink
ENV PATH=/opt/venv/bin:$PATH \
    FLINK_PROPERTIES="python.executable: /opt/venv/bin/python\npython.client.executable: /opt/venv/bin/python"
USER flink
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["help"]
