"""Example feature definitions: fraud signals over a payments topic.

Run the feature job with them::

    FEATURESTREAM_DEFINITIONS=docs/examples/payments_definitions.py featurestream submit

Each record on the ``payments`` topic is one JSON object with the fields below (``ts``: the
event time in epoch ms). Rows land in Redis as ``fs:merchant:<merchant_id>`` and
``fs:card:<card_id>``.
"""

from featurestream.definitions import (
    LIFETIME,
    Entity,
    Feature,
    FeatureGroup,
    Source,
    all_of,
    eq,
    gt,
    isin,
)

payments = Source(
    "payments",
    topic="payments",
    timestamp="ts",
    fields={
        "payment_id": "string",
        "merchant_id": "string",
        "card_id": "string",
        "amount": "double",
        "currency": "string",
        "status": "string",  # approved, declined, refunded, charged_back
        "country": "string?",  # unknown for some card-not-present payments
        "ts": "long",
    },
)

merchant = Entity("merchant", keys=("merchant_id",))
card = Entity("card", keys=("card_id",))

declined = eq("status", "declined")
disputed = isin("status", ["refunded", "charged_back"])
large = gt("amount", 1_000.0)

merchant_activity = FeatureGroup("merchant_activity", merchant, payments, [
    Feature("payments_15m", "count", window="15m"),
    Feature("declined_15m", "count", window="15m", where=declined),
    Feature("decline_rate_15m", "ratio", numerator="declined_15m", denominator="payments_15m"),
    Feature("volume_1h", "sum", field="amount", window="1h", where=eq("status", "approved")),
    Feature("mean_amount_1h", "mean", field="amount", window="1h"),
    Feature("disputes_24h", "count", window="24h", where=disputed),
    Feature("distinct_cards_1h", "approx_distinct", field="card_id", window="1h", lg_k=12),
    Feature("countries_24h", "distinct", field="country", window="24h"),
    Feature("payments_lifetime", "count", window=LIFETIME),
])

card_activity = FeatureGroup("card_activity", card, payments, [
    Feature("payments_1h", "count", window="1h"),
    Feature("large_payments_24h", "count", window="24h", where=all_of(large, declined)),
    Feature("min_amount_24h", "min", field="amount", window="24h"),
    Feature("max_amount_24h", "max", field="amount", window="24h"),
    Feature("distinct_merchants_24h", "distinct", field="merchant_id", window="24h"),
    Feature("last_country", "last", field="country", window=LIFETIME),
    Feature("last_merchants", "last_n", field="merchant_id", window="24h", n=5),
    Feature("ms_since_last_decline", "time_since_last", window="24h", where=declined),
    Feature("spend_lifetime", "sum", field="amount", window=LIFETIME),
])
