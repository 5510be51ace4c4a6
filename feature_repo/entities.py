"""Entities: what features are keyed by. Join keys match the transaction columns."""

from feast import Entity, ValueType

card = Entity(
    name="card",
    join_keys=["card_id"],
    value_type=ValueType.STRING,
    description="A payment card, `c` + 6 digits.",
    tags={"team": "fraud", "pii": "pseudonymous"},
)

merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.STRING,
    description="A merchant (acceptor), `m` + 5 digits.",
    tags={"team": "fraud"},
)
