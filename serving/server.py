"""``featurestream serve``: the reader on uvicorn (uvloop, httptools), one process per worker.

The parent binds the socket (a taken port fails at once, naming the setting), points
prometheus_client at a private multiprocess directory, then runs one worker in-process or
uvicorn's supervisor for several. Each process logs one line per lifecycle event: the parent
"listening" and "stopped", each worker "started" (with Redis reachable or not) and "stopped".
This module must not import prometheus_client (directly or through :mod:`.app`): the
directory has to be set before it is first imported.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import tempfile
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from featurestream.errors import UserFacingError
from featurestream.serving.entities import reader_definitions
from featurestream.serving.redis_client import parse_redis_url
from featurestream.serving.redis_cluster_client import check_cluster_settings
from featurestream.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# Our lifecycle lines at INFO; uvicorn's own chatter only from WARNING up; no access log.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line",
                            "stream": "ext://sys.stderr"}},
    "loggers": {
        "featurestream.serving": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}


def serve(settings: Settings, args: argparse.Namespace) -> int:
    """CLI handler: serve until SIGTERM or SIGINT, then stop cleanly."""
    try:
        target = parse_redis_url(settings.redis_url)
    except ValueError as exc:
        raise SettingsError(f"FEATURESTREAM_REDIS_URL: {exc}; use "
                            "redis://[:password@]host:port/db or rediss:// for TLS") from None
    reader_definitions(settings)  # a mistake in them fails here, once, not in every worker
    check_cluster_settings(settings)
    sock = _bind(settings.serve_host, settings.serve_port)
    metrics_dir = tempfile.mkdtemp(prefix="featurestream-reader-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    workers = settings.serve_workers
    config = uvicorn.Config(
        "featurestream.serving.app:app_from_env", factory=True, workers=workers, loop="uvloop",
        http="httptools", ws="none", lifespan="on", access_log=False, log_config=LOG_CONFIG,
        log_level="warning", server_header=False, timeout_graceful_shutdown=5)
    log.info("reader: listening on http://%s:%d (pid %d, %d worker(s), redis at %s)",
             settings.serve_host, settings.serve_port, os.getpid(), workers, target.describe())
    server = uvicorn.Server(config)
    # A stop signal before uvicorn takes the signals over, or the one it re-raises once it has
    # stopped, just (still) asks the server to stop. (The supervisor installs its own.)
    previous = {sig: signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if workers == 1 and not server.started:
        raise UserFacingError("the reader failed to start; see the log above")
    log.info("reader: stopped")
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (UserFacingError naming the settings if taken)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserFacingError(f"cannot listen on {host}:{port} ({exc.strerror}); set "
                              "FEATURESTREAM_SERVE_HOST / FEATURESTREAM_SERVE_PORT to a free "
                              "address") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
