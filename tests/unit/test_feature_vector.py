"""Feature-vector assembly: the model's order, record fields, rows of several entities, defaults,
what is unscorable, and models checked against the definitions."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.udfs.contract.events import Event
from featurestream.udfs.definitions.defaults import ITEM, USER, events_source, user_features
from featurestream.udfs.definitions.filters import eq
from featurestream.udfs.definitions.model import Entity, Feature, FeatureGroup, Source, validate
from featurestream.udfs.scoring.vector import FeatureCatalog, Row, UnknownFeature, VectorPlan
from featurestream.udfs.wire.dead_letters import ErrorClass, Problem, Stage

EVENTS = events_source("events")
PAYMENTS = Source("payments", topic="payments", fields={
    "merchant_id": "string", "amount": "double", "ts": "long"})
MERCHANT = Entity("merchant", keys=("merchant_id",))
DEFINITIONS = validate([
    FeatureGroup("user_activity", USER, EVENTS, user_features(("5m", "1h", "24h"))),
    FeatureGroup("item_activity", ITEM, EVENTS, (
        Feature("views_1h", "count", window="1h", where=eq("event_type", "view")),
        Feature("last_type", "last", field="event_type", window="1h"),
        Feature("last_amount", "last", field="amount", window="1h"),
    )),
    FeatureGroup("merchant_activity", MERCHANT, PAYMENTS, (
        Feature("payments_1h", "count", window="1h"),)),
])
CATALOG = FeatureCatalog.from_definitions(DEFINITIONS)
NAMES = ("purchases_5m", "amount", "hour_of_day", "avg_spend_24h")
DEFAULTS = {"purchases_5m": 0.0, "amount": 0.0, "avg_spend_24h": -1.0}
# 2023-11-14 22:13:20 UTC
EVENT = Event("e-1", "u-1", "purchase", "item-1", 42.5, 1_700_000_000_000, None)
PLAN = CATALOG.plan(NAMES)


def assemble(plan: VectorPlan, defaults: dict[str, float], event: Event,
             rows: Mapping[str, Row]) -> list[float] | Problem:
    return plan.assemble(defaults, event, rows, plan.entity_ids(event))


def test_vector_follows_the_declared_order_with_record_fields_and_row_values() -> None:
    row = {"as_of": 1, "version": 1, "purchases_5m": 3, "avg_spend_24h": 12.5, "views_1m": 9}
    assert PLAN.entities == {"user": ("user_id",)}
    assert assemble(PLAN, DEFAULTS, EVENT, {"user": row}) == [3.0, 42.5, 22.0, 12.5]


def test_no_row_takes_the_defaults() -> None:
    assert assemble(PLAN, DEFAULTS, EVENT, {}) == [0.0, 42.5, 22.0, -1.0]


def test_null_values_and_record_fields_take_defaults() -> None:
    view = EVENT._replace(event_type="add_to_cart", amount=None)
    row = {"purchases_5m": 1, "avg_spend_24h": None}
    assert assemble(PLAN, DEFAULTS, view, {"user": row}) == [1.0, 0.0, 22.0, -1.0]


def test_a_vector_reads_the_rows_of_several_entities_by_the_events_keys() -> None:
    plan = CATALOG.plan(("amount", "item.views_1h", "spend_1h", "user.purchases_5m",
                         "item.last_amount"))
    assert plan.entities == {"item": ("item_id",), "user": ("user_id",)}
    assert plan.entity_ids(EVENT) == {"item": "item-1", "user": "u-1"}
    rows = {"user": {"spend_1h": 7.5, "purchases_5m": 2},
            "item": {"views_1h": 40, "last_amount": 3.0}}
    assert assemble(plan, {}, EVENT, rows) == [42.5, 40.0, 7.5, 2.0, 3.0]


def test_a_missing_entity_row_takes_defaults_or_names_the_entity() -> None:
    plan = CATALOG.plan(("item.views_1h", "purchases_5m"))
    user_only = {"user": {"purchases_5m": 2}}
    assert assemble(plan, {"item.views_1h": 0.0}, EVENT, user_only) == [0.0, 2.0]
    problem = assemble(plan, {}, EVENT, user_only)
    assert problem == Problem(
        Stage.FEATURES, ErrorClass.MISSING_FEATURE, "item 'item-1' has no feature row and the "
        "model declares no default for 'item.views_1h'")
    no_item = EVENT._replace(item_id=None)
    assert plan.entity_ids(no_item) == {"item": None, "user": "u-1"}
    assert assemble(plan, {"item.views_1h": -1.0}, no_item, user_only) == [-1.0, 2.0]
    problem = assemble(plan, {}, no_item, user_only)
    assert isinstance(problem, Problem) and problem.error_class == ErrorClass.MISSING_FEATURE
    assert "names no item" in problem.message and "item_id" in problem.message


def test_an_entity_whose_keys_the_event_lacks_has_no_row() -> None:
    plan = CATALOG.plan(("merchant.payments_1h",))
    assert plan.entity_ids(EVENT) == {"merchant": None}
    assert assemble(plan, {"merchant.payments_1h": 0.0}, EVENT, {}) == [0.0]


def test_unknown_user_without_defaults_is_a_problem() -> None:
    problem = assemble(PLAN, {}, EVENT, {})
    assert isinstance(problem, Problem)
    assert problem.stage == Stage.FEATURES
    assert problem.error_class == ErrorClass.UNKNOWN_USER
    assert problem.error_class.value == "UnknownUser"
    assert "u-1" in problem.message and "purchases_5m" in problem.message


def test_absent_feature_without_default_is_a_problem() -> None:
    problem = assemble(PLAN, {"purchases_5m": 0.0}, EVENT, {"user": {"purchases_5m": 2}})
    assert problem == Problem(
        Stage.FEATURES, ErrorClass.MISSING_FEATURE, "feature 'avg_spend_24h' of user 'u-1' is "
        "null or absent and the model declares no default")


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_values_are_a_problem(bad: float) -> None:
    problem = assemble(PLAN, DEFAULTS, EVENT,
                       {"user": {"purchases_5m": 1, "avg_spend_24h": bad}})
    assert isinstance(problem, Problem)
    assert problem.error_class == ErrorClass.NON_FINITE_FEATURE
    assert problem.error_class.value == "NonFiniteFeature"
    assert "avg_spend_24h" in problem.message


def test_a_value_that_is_not_a_number_is_a_corrupt_row() -> None:
    problem = assemble(PLAN, DEFAULTS, EVENT, {"user": {"purchases_5m": "many"}})
    assert isinstance(problem, Problem)
    assert problem.error_class == ErrorClass.CORRUPT_FEATURE_ROW
    assert "purchases_5m" in problem.message and "'many'" in problem.message


@pytest.mark.parametrize(("name", "reason"), [
    ("item.clicks_1h", "'item.clicks_1h': entity 'item' has no feature 'clicks_1h' (its "
                       "features: last_amount, views_1h)"),
    ("store.views_1h", "'store.views_1h': no entity 'store' is defined (entities: item, "
                       "merchant, user)"),
    ("views_7d", "'views_7d': not a record feature (amount, hour_of_day) nor a feature of "
                 "entity 'user'"),
    ("item.last_type", "'item.last_type': the values of feature 'last_type' of entity 'item' "
                       "are not numbers"),
])
def test_a_model_naming_a_feature_the_definitions_lack_is_refused(name: str,
                                                                  reason: str) -> None:
    with pytest.raises(UnknownFeature) as raised:
        CATALOG.plan(("amount", "purchases_5m", name))
    message = str(raised.value)
    assert message.startswith("features the definitions do not provide: ")
    assert reason in message
    assert "FEATURESTREAM_DEFINITIONS" in message


def test_without_a_user_entity_unqualified_names_are_refused() -> None:
    catalog = FeatureCatalog.from_definitions(validate([
        FeatureGroup("merchant_activity", MERCHANT, PAYMENTS, (
            Feature("payments_1h", "count", window="1h"),))]))
    assert catalog.plan(("amount", "merchant.payments_1h")).entities == {
        "merchant": ("merchant_id",)}
    with pytest.raises(UnknownFeature, match="no entity 'user' is defined"):
        catalog.plan(("payments_1h",))


def test_a_model_trained_on_another_definition_of_a_feature_is_refused() -> None:
    def catalog(purchase_type: str, window: str = "1h") -> FeatureCatalog:
        return FeatureCatalog.from_definitions(validate([FeatureGroup(
            "user_activity", USER, events_source("events"), (
                Feature("purchases_1h", "count", window=window,
                        where=eq("event_type", purchase_type)),
                Feature("views_1h", "count", window="1h", where=eq("event_type", "view")),
                Feature("ratio_1h", "ratio", numerator="purchases_1h",
                        denominator="views_1h")))]))

    trained = catalog("purchase").signatures
    names = ("amount", "purchases_1h", "ratio_1h", "views_1h")
    assert catalog("purchase").plan(names, trained).names == names
    assert catalog("purchase").plan(names, None).names == names, "older models: not checked"
    with pytest.raises(UnknownFeature) as refused:
        catalog("click").plan(names, trained)
    message = str(refused.value)
    assert "'purchases_1h': defined differently than when the model was trained" in message
    assert "'ratio_1h': defined differently" in message, "a ratio follows what it divides"
    assert message.count("defined differently") == 2, "views_1h is unchanged"
    catalog("click").plan(("amount", "views_1h"), trained)  # unchanged features still serve


feature_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(),
                           st.just("text"), st.just([1.0]))


@settings(max_examples=300)
@given(user=st.none() | st.dictionaries(st.sampled_from(["purchases_5m", "spend_1h", "x"]),
                                        feature_values),
       item=st.none() | st.dictionaries(st.just("views_1h"), feature_values),
       defaults=st.dictionaries(st.sampled_from(["amount", "purchases_5m", "item.views_1h"]),
                                st.floats() | st.integers(-3, 3)),
       amount=st.none() | st.floats(0, 100), item_id=st.none() | st.just("i-1"))
def test_the_fast_path_gives_the_vector_or_declines_exactly_when_assemble_refuses(
        user: Row | None, item: Row | None, defaults: dict[str, float], amount: float | None,
        item_id: str | None) -> None:
    plan = CATALOG.plan(("amount", "hour_of_day", "purchases_5m", "spend_1h",
                              "item.views_1h"))
    event = Event("e1", "u-1", "purchase", item_id, amount, 1_700_000_000_000, None)
    rows = {entity: row for entity, row in (("user", user), ("item", item)) if row is not None}
    slow = plan.assemble(defaults, event, rows, plan.entity_ids(event))
    fast = plan.fast(defaults)(event, rows)
    if isinstance(slow, Problem):
        assert fast is None
    else:
        assert fast == slow and all(type(v) is float for v in fast)
