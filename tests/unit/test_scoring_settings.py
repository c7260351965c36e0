"""The scoring job's settings: defaults, parsing, and errors naming the variable and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestream.cli.submit import JOB_MODULES
from featurestream.settings import Settings, SettingsError


def test_scoring_defaults() -> None:
    settings = Settings.from_env({"FEATURESTREAM_HOME": "/srv/fs"})
    assert settings.effective_models_dir == Path("/srv/fs/models")
    assert settings.scored_event_types == ("purchase",)
    assert (settings.experiment, settings.shadow_model) == ("", "")
    assert settings.scores_delivery == "exactly_once"
    assert JOB_MODULES["scoring"] == "featurestream.jobs.scoring.job"


def test_scoring_overrides() -> None:
    settings = Settings.from_env({
        "FEATURESTREAM_MODELS_DIR": "/models",
        "FEATURESTREAM_SCORED_EVENT_TYPES": "purchase, add_to_cart",
        "FEATURESTREAM_EXPERIMENT": "v3:90,v4:10",
        "FEATURESTREAM_SHADOW_MODEL": "v5",
        "FEATURESTREAM_MODEL_POLL_INTERVAL_MS": "30s",
        "FEATURESTREAM_SCORES_DELIVERY": "at_least_once",
    })
    assert settings.effective_models_dir == Path("/models")
    assert settings.scored_event_types == ("purchase", "add_to_cart")
    assert settings.model_poll_interval_ms == 30_000


@pytest.mark.parametrize(("variable", "value", "hint"), [
    ("FEATURESTREAM_EXPERIMENT", "v3:90,v4", "version:weight"),
    ("FEATURESTREAM_EXPERIMENT", "v3:50,v3:50", "once"),
    ("FEATURESTREAM_SHADOW_MODEL", "latest", "v1, v2"),
    ("FEATURESTREAM_SCORED_EVENT_TYPES", "refund", "view,click"),
    ("FEATURESTREAM_SCORE_BATCH_SIZE", "0", "positive"),
    ("FEATURESTREAM_SCORE_BATCH_SIZE", "20000", "BUNDLE_SIZE"),
    ("FEATURESTREAM_SCORES_DELIVERY", "maybe", "exactly_once"),
    ("FEATURESTREAM_MODEL_NAME", "my model", "underscores"),
])
def test_bad_scoring_values_name_the_variable_and_the_fix(variable: str, value: str,
                                                           hint: str) -> None:
    with pytest.raises(SettingsError, match=variable) as raised:
        Settings.from_env({variable: value})
    assert hint in str(raised.value)
