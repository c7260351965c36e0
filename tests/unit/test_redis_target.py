"""The jobs' Redis target travels pickled to the workers and may be logged: its URL's password
must never show."""

from __future__ import annotations

import pickle

from featurestream.jobs.redis_target import RedisTarget
from featurestream.settings import Settings


def test_the_password_never_shows_and_survives_pickling() -> None:
    settings = Settings(redis_url="redis://app:s3cret-Passw0rd@cache:6379/0")
    target = RedisTarget.from_settings(settings)
    assert "s3cret-Passw0rd" not in repr(target) and "s3cret-Passw0rd" not in str(target)
    assert "cache:6379" in repr(target)
    assert pickle.loads(pickle.dumps(target)).url == settings.redis_url  # the workers need it
