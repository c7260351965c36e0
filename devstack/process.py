"""Process helpers for the local stack: pid files, port checks, waiting, stopping, /proc lookups.

Linux only (reads ``/proc``), like the rest of the embedded stack.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from featurestream.errors import UserFacingError

FIRST_POLL_S, POLL_S = 0.01, 0.2  # polls back off from 10 ms (Redis is up in ms) to 200 ms


def poll_pauses() -> Iterator[float]:
    """Pauses between polls: 10 ms, doubling up to 200 ms, then 200 ms for ever."""
    pause = FIRST_POLL_S
    while True:
        yield pause
        pause = min(pause * 2, POLL_S)


def read_pid(path: Path) -> int | None:
    """The first pid in a pid file, or None if there is none."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid: int) -> str:
    """The command line of a process, space separated ('' if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace"
        ).strip()
    except OSError:
        return ""


def environ(pid: int) -> dict[str, str]:
    """The environment of a process ({} if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def cwd(pid: int) -> str:
    """The working directory of a process ('' if it is gone or unreadable)."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie: some thread of it still runs.

    A JVM's main thread returns early in its shutdown while other threads go on (and hold its
    ports): its leader then reads as a zombie, so the threads are asked too.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    return any(_task_running(pid, task) for task in tasks)


def _task_running(pid: int, task: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def owned_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process is alive and its command line contains ``marker``."""
    pid = read_pid(pid_file)
    if pid is not None and alive(pid) and marker in cmdline(pid):
        return pid
    return None


def all_pids() -> Iterator[int]:
    """Every pid currently in /proc."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def port_owner(port: int) -> str:
    """Describe the process listening on a TCP port, e.g. ``pid 42 (java)``, as far as visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rpartition(":")[2], 16)
                if local_port == port and fields[3] == "0A":  # 0A = LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in all_pids():
        with contextlib.suppress(OSError):
            fd_dir = f"/proc/{pid}/fd"
            if any(os.readlink(f"{fd_dir}/{fd}") in inodes for fd in os.listdir(fd_dir)):
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                return f"pid {pid} ({name})"
    return "another process"


def ensure_port_free(port: int, variable: str, what: str) -> None:
    """Raise a :class:`UserFacingError` naming the port, its owner and the variable to change."""
    if port_open(port):
        raise UserFacingError(
            f"port {port} for {what} is in use by {port_owner(port)}, not by this stack; "
            f"stop that process or set {variable} to use a free port"
        )


def spawn(argv: list[str], log_file: Path, pid_file: Path,
          env: Mapping[str, str] | None = None) -> int:
    """Start a detached server process logging to ``log_file`` (the previous one kept as
    ``<name>.1``); record its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    if log_file.exists():
        log_file.replace(log_file.with_name(log_file.name + ".1"))
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=None if env is None else dict(env), start_new_session=True, cwd=log_file.parent,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def log_excerpt(path: Path, lines: int = 12) -> str:
    """The first ERROR / ``Caused by`` lines of a log (the root cause in Java logs full of stack
    traces and thread dumps), else its last lines; '' if missing."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if " ERROR " in line or line.startswith("Caused by:")]
    return "\n".join(errors[:lines] if errors else text[-lines:])


def wait_ready(what: str, ready: Callable[[], bool], timeout: float,
               running: Callable[[], bool], log_file: Path) -> None:
    """Poll ``ready`` until true.

    Raises a :class:`UserFacingError` with a log excerpt if the server exits or times out.
    """
    start = time.monotonic()
    for pause in poll_pauses():
        if ready():
            return
        if not running():
            problem = "exited during start-up"
        elif time.monotonic() - start > timeout:
            problem = f"did not become ready within {timeout:.0f} s"
        else:
            time.sleep(pause)
            continue
        raise UserFacingError(
            f"{what} {problem}; see {log_file}:\n{log_excerpt(log_file)}"
        )


def terminate(pids: Iterable[int], timeout: float = 15.0) -> None:
    """SIGTERM the processes, wait up to ``timeout`` s, then SIGKILL the survivors."""
    pending = [pid for pid in pids if alive(pid)]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        pauses = poll_pauses()
        while pending and time.monotonic() < deadline:
            time.sleep(next(pauses))
            pending = [pid for pid in pending if alive(pid)]
