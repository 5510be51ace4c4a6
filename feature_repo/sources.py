"""Data sources: the feature pipeline's parquet tables, the streaming push source and the request data.

Paths are resolved when `feast apply` runs and stored in the registry: FLYWHEEL_DATA_DIR if set, else
the repository's data/ directory (where `make data` writes).
"""

import os
from pathlib import Path

from feast import Field, FileSource, PushSource, RequestSource
from feast.types import Float64, Int64

DATA_DIR = Path(os.environ.get("FLYWHEEL_DATA_DIR") or Path(__file__).resolve().parent.parent / "data")

# A glob: the batch table (card_activity.parquet, written by `make data`) and the parts the features
# service's stream step appends beside it (card_activity.stream-<first>-<last>.parquet, one row per live
# transaction, the same columns), so training reads live transactions' rows as DuckDB unions them. The
# batch table itself is never rewritten (Feast's PushMode.OFFLINE would rewrite it whole on every push).
# Feast's apply warns that it cannot validate a glob path; reads are DuckDB's, which expands it.
card_activity_source = FileSource(
    name="card_activity_source",
    path=str(DATA_DIR / "card_activity*.parquet"),
    timestamp_field="event_timestamp",
    description="Card state including each transaction, one row per transaction (flywheel_core.feature_pipeline "
    "for the history, flywheel_core.card_stream for live transactions).",
    tags={"producer": "flywheel_core.feature_pipeline"},
)

# Streaming updates of the same view: the features service's stream step (POST /stream/transactions, fed by
# the transformer after scoring) pushes each live transaction's card row here, so the next transaction of
# that card is served the state the point-in-time join gives training.
card_activity_push = PushSource(
    name="card_activity_push",
    batch_source=card_activity_source,
    description="Online updates of card_activity, pushed per transaction.",
    tags={"producer": "online"},
)

# A glob as for card_activity: the batch table and the daily snapshots the stream step computes as live
# traffic passes each 00:00 (merchant_risk.stream-<first day>-<last day>.parquet, same columns).
merchant_risk_source = FileSource(
    name="merchant_risk_source",
    path=str(DATA_DIR / "merchant_risk*.parquet"),
    timestamp_field="event_timestamp",
    description="Daily merchant snapshots at 00:00 UTC from labels known at that instant.",
    tags={"producer": "flywheel_core.feature_pipeline"},
)

# The stream step pushes each new day's snapshot online here (services/features/_merchant_stream.py).
merchant_risk_push = PushSource(
    name="merchant_risk_push",
    batch_source=merchant_risk_source,
    description="Online updates of merchant_risk, pushed per daily snapshot of live traffic.",
    tags={"producer": "online"},
)

transaction_request = RequestSource(
    name="transaction_request",
    schema=[
        Field(name="amount", dtype=Float64, description="Transaction amount in its currency."),
        Field(name="event_hour", dtype=Int64, description="Hour of the transaction, 0-23 UTC."),
    ],
    description="Fields of the transaction being scored, sent with the request.",
    tags={"producer": "request"},
)
