"""``devstack.process.alive`` on real processes: a process whose main thread has ended while
another thread runs on (what a JVM does in its shutdown) is alive, and holds its ports, until
its last thread ends; an exited, unreaped child is not."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from featurestream.devstack.process import alive

pytestmark = pytest.mark.unit

# The main thread ends (pthread_exit) and its leader reads as a zombie; a second thread runs on
# for a while, then the process ends.
MAIN_THREAD_ENDS_FIRST = """
import ctypes, threading, time
threading.Thread(target=lambda: time.sleep(2.0)).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


def _leader_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


def test_a_process_whose_main_thread_ended_is_alive_until_its_last_thread_ends() -> None:
    child = subprocess.Popen([sys.executable, "-c", MAIN_THREAD_ENDS_FIRST],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 1.0
        while _leader_state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _leader_state(child.pid) == "Z", "the main thread did not end"
        assert alive(child.pid)  # the other thread still runs
        child.wait(timeout=10)
    finally:
        child.kill()
    assert not alive(child.pid)


def test_an_exited_unreaped_child_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while _leader_state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert not alive(child.pid)
    finally:
        child.wait()
