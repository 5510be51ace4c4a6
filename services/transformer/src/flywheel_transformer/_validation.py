"""Turning a KServe V1 predict body into typed transactions, or a 4xx that names the field and instance.

Domain code: no framework, no I/O. Unknown fields are ignored (the simulator's live feed carries labels
the transformer must not look at), every known field is checked for presence and type, and all problems
of a request are listed at once so a client can fix them in one go.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ._errors import InvalidRequest, TooManyInstances, UnsupportedMediaType

STRING_FIELDS = (
    "transaction_id",
    "card_id",
    "merchant_id",
    "currency",
    "country",
    "merchant_category",
    "channel",
)
REQUIRED_FIELDS = (*STRING_FIELDS, "amount", "event_timestamp")
MAX_REPORTED_PROBLEMS = 20


@dataclass(frozen=True)
class Transaction:
    """One raw card transaction as the client sends it, validated."""

    transaction_id: str
    card_id: str
    merchant_id: str
    amount: float
    currency: str
    country: str
    merchant_category: str
    channel: str
    event_timestamp: datetime
    """Timezone-aware, UTC."""

    @property
    def event_hour(self) -> int:
        """Hour of day (0-23, UTC): the request-time input of the on-demand features."""
        return self.event_timestamp.hour


def decode_body(payload: Any, content_type: str | None) -> Any:
    """The JSON value of a body KServe left undecoded (it only decodes a few exact content types)."""
    if not isinstance(payload, (bytes, bytearray)):
        return payload
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"content type '{content_type}' is not supported: send the transactions as JSON "
            "with 'content-type: application/json'"
        )
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequest(f"the body is not valid JSON ({e})") from e
    except RecursionError as e:
        raise InvalidRequest("the body is nested too deeply to be a transaction request") from e


def parse_instances(body: Any, max_instances: int) -> list[Transaction]:
    """Validate `{"instances": [transaction, ...]}` and return the transactions in order."""
    if not isinstance(body, Mapping):
        raise InvalidRequest('the body must be a JSON object {"instances": [transaction, ...]}')
    if "instances" not in body:
        raise InvalidRequest('is required: send {"instances": [transaction, ...]}', field="instances")
    instances = body["instances"]
    if not isinstance(instances, list):
        raise InvalidRequest(f"must be a list of transactions, got {_json_type(instances)}", field="instances")
    if not instances:
        raise InvalidRequest("must contain at least one transaction", field="instances")
    if len(instances) > max_instances:
        raise TooManyInstances(
            f"has {len(instances)} transactions; at most {max_instances} per request "
            "(FLYWHEEL_TRANSFORMER_MAX_INSTANCES): split the batch",
            field="instances",
        )
    transactions: list[Transaction] = []
    problems: list[InvalidRequest] = []
    for index, instance in enumerate(instances):
        try:
            transactions.append(_parse_transaction(instance, index, problems))
        except _Skip:
            continue
    if problems:
        first = problems[0]
        first.problems = [{"index": p.index, "field": p.field, "error": p.reason} for p in problems]
        raise first
    return transactions


class _Skip(Exception):
    """This instance had problems (already recorded)."""


def _parse_transaction(instance: Any, index: int, problems: list[InvalidRequest]) -> Transaction:
    def problem(message: str, field: str | None = None) -> None:
        if len(problems) < MAX_REPORTED_PROBLEMS:
            problems.append(InvalidRequest(message, field=field, index=index))

    if not isinstance(instance, Mapping):
        problem(f"must be a JSON object with the transaction's fields, got {_json_type(instance)}")
        raise _Skip
    before = len(problems)
    values: dict[str, Any] = {}
    for field in STRING_FIELDS:
        value = instance.get(field)
        if field not in instance or value is None:
            problem("is required", field)
        elif not isinstance(value, str):
            problem(f"must be a string, got {_json_type(value)}", field)
        elif not value.strip():
            problem("must not be empty", field)
        else:
            values[field] = value
    amount = instance.get("amount")
    if "amount" not in instance or amount is None:
        problem("is required", "amount")
    elif isinstance(amount, bool) or not isinstance(amount, (int, float)):
        problem(f"must be a number, got {_json_type(amount)}", "amount")
    elif not _finite(amount):
        problem("must be a finite number", "amount")
    else:
        values["amount"] = float(amount)
    stamp = instance.get("event_timestamp")
    if "event_timestamp" not in instance or stamp is None:
        problem("is required", "event_timestamp")
    elif not isinstance(stamp, str):
        problem(f"must be an ISO-8601 string, got {_json_type(stamp)}", "event_timestamp")
    else:
        parsed = _parse_timestamp(stamp)
        if parsed is None:
            problem(f"'{stamp[:64]}' is not an ISO-8601 timestamp (e.g. 2026-11-23T12:00:00Z)", "event_timestamp")
        else:
            values["event_timestamp"] = parsed
    if len(problems) > before or len(values) < len(REQUIRED_FIELDS):
        raise _Skip
    return Transaction(**values)


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(float(number))
    except OverflowError:  # an integer beyond float range
        return False


def _parse_timestamp(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # The data contract stamps everything in UTC; a naive stamp is read the same way.
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
