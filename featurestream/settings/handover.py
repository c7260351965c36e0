"""Settings handed to a process that reads them with ``Settings.from_env`` (the job's
``main()``, run by ``flink run``): public ones in its environment, secret ones in a private
file. Why not all in the environment: Flink's client logs the whole environment of the Python
process it starts (hiding only names with "password", "secret" or "token"), so a Redis URL's
password or a Kafka ``sasl.password`` would land in its log."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from featurestream.settings import PREFIX, SECRETS_FILE, Settings


@contextmanager
def job_environment(settings: Settings,
                    base: Mapping[str, str] = os.environ) -> Iterator[dict[str, str]]:
    """``base`` without its ``FEATURESTREAM_*`` variables, every public setting, and
    :data:`SECRETS_FILE` naming a file of the secret ones (in a directory only this user can
    read, removed on exit: the process must have read it by then)."""
    secret = settings.secret_env()
    with tempfile.TemporaryDirectory(prefix="featurestream-secrets-") as private:
        path = Path(private) / "secrets.json"
        path.write_text(json.dumps(secret), encoding="utf-8")
        env = {k: v for k, v in base.items() if not k.startswith(PREFIX)}
        env.update({k: v for k, v in settings.to_env().items() if k not in secret})
        env[SECRETS_FILE] = str(path)
        yield env
