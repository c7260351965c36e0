"""Feature-vector assembly: the model's order, record fields, defaults, and what is unscorable."""

from __future__ import annotations

import math

import pytest

from featurestream.udfs.contract.events import Event
from featurestream.udfs.scoring.vector import assemble
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage

NAMES = ("purchases_5m", "amount", "hour_of_day", "avg_spend_24h")
DEFAULTS = {"purchases_5m": 0.0, "amount": 0.0, "avg_spend_24h": -1.0}
# 2023-11-14 22:13:20 UTC
EVENT = Event("e-1", "u-1", "purchase", "item-1", 42.5, 1_700_000_000_000, None)


def test_vector_follows_the_declared_order_with_record_fields_and_row_values() -> None:
    row = {"as_of": 1, "version": 1, "purchases_5m": 3, "avg_spend_24h": 12.5, "views_1m": 9}
    assert assemble(NAMES, DEFAULTS, EVENT, row) == [3.0, 42.5, 22.0, 12.5]


def test_no_row_takes_the_defaults() -> None:
    assert assemble(NAMES, DEFAULTS, EVENT, None) == [0.0, 42.5, 22.0, -1.0]


def test_null_values_and_record_fields_take_defaults() -> None:
    view = EVENT._replace(event_type="add_to_cart", amount=None)
    row = {"purchases_5m": 1, "avg_spend_24h": None}
    assert assemble(NAMES, DEFAULTS, view, row) == [1.0, 0.0, 22.0, -1.0]


def test_unknown_user_without_defaults_is_a_problem() -> None:
    problem = assemble(NAMES, {}, EVENT, None)
    assert isinstance(problem, Problem)
    assert problem.stage == Stage.FEATURES
    assert problem.error_class == ErrorClass.UNKNOWN_USER
    assert problem.error_class.value == "UnknownUser"
    assert "u-1" in problem.message and "purchases_5m" in problem.message


def test_absent_feature_without_default_is_a_problem() -> None:
    problem = assemble(NAMES, {"purchases_5m": 0.0}, EVENT, {"purchases_5m": 2})
    assert problem == Problem(
        Stage.FEATURES, ErrorClass.MISSING_FEATURE, "feature 'avg_spend_24h' of user 'u-1' is "
        "null or absent and the model declares no default")


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_values_are_a_problem(bad: float) -> None:
    problem = assemble(NAMES, DEFAULTS, EVENT, {"purchases_5m": 1, "avg_spend_24h": bad})
    assert isinstance(problem, Problem)
    assert problem.error_class == ErrorClass.NON_FINITE_FEATURE
    assert problem.error_class.value == "NonFiniteFeature"
    assert "avg_spend_24h" in problem.message
