"""The jobs' Redis writers and the CLI against a real Redis Cluster (3 masters, 3 replicas;
``FEATURESTREAM_REDIS_CLUSTER=true``): rows, captured rows and scores read back exactly from
hash-tagged keys on every master, the newer row or score wins in every slot, writes running
through a manual failover or the loss of a master (its replica elected) lose nothing, and
``featurestream features`` / the online-store backfill / ``verify``'s row reader see the same
rows."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from featurestream.backfill.online_store import check_reachable, write_online_store
from featurestream.cli.redis_access import redis_client
from featurestream.cli.rematerialize import check_redis
from featurestream.cli.verify import online_rows
from featurestream.errors import UserFacingError
from featurestream.jobs.redis_target import RedisLoginError, RedisTarget
from featurestream.jobs.redis_writer import RedisRowWriter
from featurestream.jobs.score_store import ScoreStore
from featurestream.settings import Settings
from featurestream.udfs.features.shard import CapturedRow
from featurestream.udfs.scoring.score_codec import ScoreRecord
from featurestream.udfs.store.redis_layout import (
    ROWS_PER_UPSERT,
    RowValue,
    decode_row,
    decode_scores,
    entity_key,
    score_key,
    user_key,
)
from testing.reader_fixtures import FEATURESTREAM, REPO
from testing.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.redis

PREFIX = "c:"
USERS = [f"u-{i}" for i in range(2 * ROWS_PER_UPSERT + 50)]


@pytest.fixture()
def cluster(redis_cluster: LocalRedisCluster) -> Iterator[LocalRedisCluster]:
    """The session's cluster, emptied."""
    redis_cluster.flush()
    yield redis_cluster


def target(cluster: LocalRedisCluster, retry_ms: int = 0) -> RedisTarget:
    return RedisTarget(cluster.url, PREFIX, 600, 10_000, point_in_time_ttl_ms=600_000,
                       cluster=True, write_retry_ms=retry_ms)


def row(as_of: int, version: int, events: int) -> dict[str, RowValue]:
    return {"as_of": as_of, "version": version, "events_1m": events, "spend_1m": events / 3,
            "last_3": ["a", None, str(events)]}


def stored(client: RedisCluster, key: str) -> dict[str, RowValue]:
    fields = decode_row(client.hgetall(key))
    fields.pop("updated_at", None)
    return fields


def score(user: str, model: str, as_of: int, value: float) -> ScoreRecord:
    return {"user_id": user, "model": model, "version": 1, "variant": "live", "score": value,
            "event_id": f"e-{user}-{as_of}", "event_type": "purchase", "ts": as_of,
            "features": {}, "features_missing": False, "as_of": as_of, "scored_at": as_of + 5,
            "shadow": None}


def test_rows_and_captured_rows_read_back_from_every_master(cluster: LocalRedisCluster) -> None:
    cluster.client().script_flush()  # no master has the upsert script: each gets it on NOSCRIPT
    writer = RedisRowWriter(target(cluster))  # without retries
    for i, user in enumerate(USERS):
        writer.add(f"user:{user}", row(1_000 + i, 1, i))
        writer.add(f"item:sku-{i}", row(2_000 + i, 2, -i))
        writer.add_captured(CapturedRow(f"user:{user}", f"e-{i}", 1_000 + i,
                                        None if i % 7 == 0 else row(999 + i, 1, i)))
    writer.flush()
    client = cluster.client()
    keys = [user_key(PREFIX, user, cluster=True) for user in USERS]
    assert keys[0] == "c:user:{u-0}"
    assert len({client.get_node_from_key(key).port for key in keys}) == 3
    for i, (user, key) in enumerate(zip(USERS, keys, strict=True)):
        assert stored(client, key) == row(1_000 + i, 1, i), user
        assert stored(client, entity_key(PREFIX, "item", f"sku-{i}", cluster=True)) == \
            row(2_000 + i, 2, -i)
        assert not client.exists(user_key(PREFIX, user)), "no untagged key"
        assert 0 < client.ttl(key) <= 600
    store = ScoreStore(target(cluster))
    wanted = [("user", user, f"e-{i}") for i, user in enumerate(USERS)] + [("user", "x", "e-x")]
    captured = store.captured(wanted)
    assert len(captured) == len(USERS)
    for i, user in enumerate(USERS):
        assert captured[("user", user, f"e-{i}")] == (None if i % 7 == 0 else
                                                      row(999 + i, 1, i))
    store.close()
    writer.close()


def test_drift_counts_add_up_once_on_every_master(cluster: LocalRedisCluster) -> None:
    store = ScoreStore(target(cluster))
    counts = {f"{PREFIX}drift:{{m-{i}}}": {"bin-1": i + 1, "bin-2": 2} for i in range(40)}
    store.add_counts(counts, 600)
    store.add_counts(counts, 600)
    store.close()
    client = cluster.client()
    assert len({client.get_node_from_key(key).port for key in counts}) == 3  # every master
    for key, fields in counts.items():
        assert client.hgetall(key) == {
            name.encode(): str(2 * count).encode() for name, count in fields.items()}
        assert 0 < client.ttl(key) <= 600


def test_the_newer_row_and_score_win_in_every_slot(cluster: LocalRedisCluster) -> None:
    client = cluster.client()
    writer = RedisRowWriter(target(cluster))
    store = ScoreStore(target(cluster))
    for user in USERS:
        writer.add(f"user:{user}", row(2_000, 5, 1))
    writer.flush()
    store.write_latest([score(user, m, 2_000, 0.5) for user in USERS for m in ("a", "b")])
    # A replayed mix: older as_of, older version, the same row, newer as_of, user by user.
    changes = [row(1_999, 9, 2), row(2_000, 4, 3), row(2_000, 5, 1), row(2_001, 1, 4)]
    for i, user in enumerate(USERS):
        writer.add(f"user:{user}", changes[i % 4])
    writer.flush()
    store.write_latest([score(user, "a", 1_999 + 2 * (i % 2), 0.25)
                        for i, user in enumerate(USERS)])
    for i, user in enumerate(USERS):
        assert stored(client, user_key(PREFIX, user, cluster=True)) == \
            (row(2_001, 1, 4) if i % 4 == 3 else row(2_000, 5, 1)), user
        key = score_key(PREFIX, user, cluster=True)
        assert key_slot(key.encode()) == key_slot(user_key(PREFIX, user, cluster=True).encode())
        scores = decode_scores(client.hgetall(key))
        assert scores["b"].score == 0.5
        assert scores["a"].score == (0.25 if i % 2 else 0.5), user
    store.close()
    writer.close()


class Writes(threading.Thread):
    """Rounds of rows of every user and their scores (round r: ``as_of`` r), through the
    writers with a 30 s retry budget, until :meth:`finish` and at least 5 rounds."""

    def __init__(self, cluster: LocalRedisCluster) -> None:
        super().__init__()
        self.writer = RedisRowWriter(target(cluster), retry_ms=30_000)
        self.store = ScoreStore(target(cluster, retry_ms=30_000))
        self.rounds: list[int] = []
        self.errors: list[BaseException] = []
        self._finish = threading.Event()

    def run(self) -> None:
        try:
            r = 0
            while r < 5 or not self._finish.is_set():
                r += 1
                for i, user in enumerate(USERS):
                    self.writer.add(f"user:{user}", row(r, 1, i))
                self.writer.flush()
                self.store.write_latest([score(user, "m", r, r / 100) for user in USERS])
                self.rounds.append(r)
        except BaseException as exc:  # reported by finish()
            self.errors.append(exc)

    def wait_rounds(self, n: int, timeout_s: float = 60) -> None:
        """Until ``n`` rounds were written (or the writes failed, or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        while len(self.rounds) < n and self.is_alive() and time.monotonic() < deadline:
            threading.Event().wait(0.01)

    def finish(self) -> int:
        """Stop after the round under way (at least 5); the last round, all written."""
        self._finish.set()
        self.join(timeout=120)
        self.store.close()
        self.writer.close()
        assert not self.errors, self.errors
        return self.rounds[-1]


def assert_round_stored(cluster: LocalRedisCluster, last: int) -> None:
    client = cluster.client()
    for i, user in enumerate(USERS):
        assert stored(client, user_key(PREFIX, user, cluster=True)) == row(last, 1, i), user
        latest = decode_scores(client.hgetall(score_key(PREFIX, user, cluster=True)))
        assert latest["m"].as_of == last


def test_writes_running_through_a_manual_failover_lose_nothing(
        cluster: LocalRedisCluster) -> None:
    writes = Writes(cluster)
    writes.start()
    try:
        writes.wait_rounds(2)
        new_master, old_master = cluster.failover()
    finally:
        last = writes.finish()
    roles = {role.port: role.master_id for role in cluster.roles()}
    assert roles[new_master.port] == "" and roles[old_master.port] != ""
    assert_round_stored(cluster, last)


@pytest.mark.parametrize("freeze", [False, True], ids=["stopped", "frozen"])
def test_writes_wait_out_a_lost_master_until_its_replica_is_elected(
        cluster: LocalRedisCluster, freeze: bool) -> None:
    """Stopped: refused connections, then CLUSTERDOWN, then MOVED. Frozen (SIGSTOP): the
    writes to it time out and are retried at its promoted replica while it is still frozen."""
    master, _ = cluster.master_and_replica()
    writes = Writes(cluster)
    writes.start()
    try:
        writes.wait_rounds(2)
        lost_at = len(writes.rounds)
        new_master = cluster.lose(master, freeze=freeze)
        writes.wait_rounds(lost_at + 2)  # rounds written while the lost master stays lost
        written_while_lost = len(writes.rounds)
    finally:
        cluster.restart(master)  # back as a replica (a writer stuck on it is released)
        last = writes.finish()
    assert written_while_lost >= lost_at + 2, "no write reached the promoted replica"
    assert new_master.port in {role.port for role in cluster.roles() if not role.master_id}
    assert_round_stored(cluster, last)


def test_the_cli_reads_and_backfills_the_cluster(cluster: LocalRedisCluster) -> None:
    settings = Settings(redis_url=cluster.url, redis_cluster=True, redis_key_prefix=PREFIX)
    check_reachable(settings)
    check_redis(settings)
    rows = {f"user:{user}": row(3_000 + i, 1, i) for i, user in enumerate(USERS[:40])}
    assert write_online_store(settings, rows) == 40
    found = {key: {k: v for k, v in fields.items() if k != "updated_at"}
             for key, fields in online_rows(settings, settings.load_definitions())}
    assert found == rows

    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTREAM_")}
    env.update({"FEATURESTREAM_REDIS_URL": cluster.url, "FEATURESTREAM_REDIS_CLUSTER": "true",
                "FEATURESTREAM_REDIS_KEY_PREFIX": PREFIX})

    def features(*args: str) -> list[dict]:
        done = subprocess.run([str(FEATURESTREAM), "features", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60, check=True)
        return [json.loads(line) for line in done.stdout.splitlines()]

    shown = features("u-3", "u-39", "nobody")
    assert [line["user_id"] for line in shown] == ["u-3", "u-39", "nobody"]
    assert {k: v for k, v in shown[0].items() if k not in ("user_id", "updated_at")} == \
        rows["user:u-3"]
    assert shown[2] == {"user_id": "nobody", "missing": True}
    some = features("--limit", "50")
    assert sorted(line["user_id"] for line in some) == sorted(USERS[:40])


@pytest.fixture()
def acl_user(cluster: LocalRedisCluster) -> Iterator[str]:
    """A user ``fs-writer`` with password ``right-secret`` on every node (ACLs are per node),
    removed afterwards."""
    for node in cluster.nodes:
        node.client().acl_setuser("fs-writer", enabled=True, passwords=["+right-secret"],
                                  keys=["*"], channels=["*"], commands=["+@all"])
    yield "fs-writer"
    for node in cluster.nodes:
        node.client().acl_deluser("fs-writer")


def test_a_wrong_password_stops_the_jobs_and_the_cli_naming_the_setting(
        cluster: LocalRedisCluster, acl_user: str) -> None:
    wrong = cluster.url.replace("redis://", f"redis://{acl_user}:wrong-secret@")
    for connect in (lambda: RedisRowWriter(target_at(wrong)), lambda: ScoreStore(target_at(wrong))):
        with pytest.raises(RedisLoginError) as refused:
            connect()
        assert "FEATURESTREAM_REDIS_URL" in str(refused.value)
        assert "wrong-secret" not in str(refused.value)
    settings = Settings(redis_url=wrong, redis_cluster=True, redis_key_prefix=PREFIX)
    with pytest.raises(UserFacingError) as unreadable, redis_client(settings):
        pass
    assert "FEATURESTREAM_REDIS_URL" in str(unreadable.value)
    assert "WRONGPASS" in str(unreadable.value) or "invalid username-password" in str(
        unreadable.value)
    assert "wrong-secret" not in str(unreadable.value)
    right = cluster.url.replace("redis://", f"redis://{acl_user}:right-secret@")
    ScoreStore(target_at(right)).close()  # the same user with its password logs in


def target_at(url: str) -> RedisTarget:
    return RedisTarget(url, PREFIX, 600, 10_000, cluster=True)
