"""Feature views: card activity (batch + push), merchant risk (daily batch) and the on-demand
transaction context, computed by the same function the transformer calls on each request."""

from datetime import timedelta

import pandas as pd
from feast import FeatureView, Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

from entities import card, merchant
from sources import card_activity_push, merchant_risk_push, transaction_request

card_activity = FeatureView(
    name="card_activity",
    entities=[card],
    # A card silent for 30 days has no recent activity to speak of: its features read as missing.
    ttl=timedelta(days=30),
    schema=[
        Field(name="txn_count_1h", dtype=Int64, description="Transactions in the last hour, this one included."),
        Field(name="txn_count_24h", dtype=Int64, description="Transactions in the last 24 h, this one included."),
        Field(name="amount_sum_24h", dtype=Float64, description="Sum of amounts in the last 24 h."),
        Field(name="amount_mean_30d", dtype=Float64, description="Mean amount over the last 30 days."),
        Field(name="distinct_countries_24h", dtype=Int64, description="Countries used in the last 24 h."),
    ],
    source=card_activity_push,
    online=True,
    description="Rolling card state, stamped at each transaction and including it.",
    tags={"team": "fraud", "entity": "card", "cadence": "per-transaction"},
)

merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    # Snapshots are daily; two days of slack covers a late batch run, older values are stale.
    ttl=timedelta(days=2),
    schema=[
        Field(name="merchant_txn_count_7d", dtype=Int64, description="Transactions in the 7 days before the snapshot."),
        Field(name="merchant_fraud_rate_30d", dtype=Float64,
              description="Known frauds / labelled transactions, last 30 days; labels known at the snapshot only."),
        Field(name="merchant_amount_mean_30d", dtype=Float64, description="Mean amount, 30 days before the snapshot."),
    ],
    source=merchant_risk_push,
    online=True,
    description="Daily merchant snapshots at 00:00 UTC.",
    tags={"team": "fraud", "entity": "merchant", "cadence": "daily"},
)


@on_demand_feature_view(
    sources=[card_activity[["amount_mean_30d"]], transaction_request],
    schema=[
        Field(name="amount_log", dtype=Float64),
        Field(name="amount_to_card_mean", dtype=Float64),
        Field(name="hour_sin", dtype=Float64),
        Field(name="hour_cos", dtype=Float64),
        Field(name="is_night", dtype=Int64),
    ],
    mode="pandas",
    description="Request-time features of the transaction; flywheel_core.ondemand.transaction_context.",
    tags={"team": "fraud", "computed_by": "flywheel_core.ondemand.transaction_context"},
)
def transaction_context(inputs: pd.DataFrame) -> pd.DataFrame:
    # Imported here because Feast pickles this function by value into the registry: whoever loads the
    # registry (feature server, trainer) then needs flywheel_core installed, not this repo on sys.path.
    from flywheel_core.ondemand import transaction_context as compute

    return compute(inputs)
