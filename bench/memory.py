"""Resident memory of every process of a local stack (servers, Flink, Python workers)."""

from __future__ import annotations

from pathlib import Path

from featurestream.devstack import LocalStack


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def stack_rss_mib(stack: LocalStack) -> dict[str, float]:
    """MiB per component and in total: Kafka, Redis, JobManager, TaskManager, Python workers."""
    pids = {
        "kafka": stack.kafka.pid(),
        "redis": stack.redis.pid(),
        "flink jobmanager": stack.flink.jobmanager_pid(),
        "flink taskmanager": stack.flink.taskmanager_pid(),
    }
    usage = {name: rss_mib(pid) for name, pid in pids.items() if pid}
    usage["python workers"] = sum(rss_mib(pid) for pid in stack.flink.python_workers())
    usage["total"] = sum(usage.values())
    return usage
