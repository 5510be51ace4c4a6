"""Turning a KServe V1 predict body into typed transactions, or a 4xx that names the field and instance.

Domain code: no framework, no I/O. The checks are pydantic types, validated by TypeAdapters built once at
import (`_ENVELOPE`, `_INSTANCES`), so a request pays for pydantic-core's validation only, never for building a
schema. Strict types: a string is a JSON string (never a number), an amount a JSON number (never a string or a
boolean) and finite, a timestamp an ISO-8601 string; the validated timestamp is always timezone-aware UTC (a
naive stamp is read as UTC, as everywhere in the data contract). Unknown fields are ignored (the simulator's
live feed carries labels the transformer must not look at), and every problem of a request (up to
MAX_REPORTED_PROBLEMS) is listed with its location at once, so a client can fix them in one go. Pydantic's
error types are turned into this service's messages in `_message`, so the 400 reads the same whatever
pydantic's wording. A number no 64-bit float holds (NaN, Infinity, 1e400) makes KServe's JSON decoder refuse
the body before this module sees it; `explain_undecodable` then names the field (a 400 like any other).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

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


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be empty")
    return value


def _iso_timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError("timestamp_type", "must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise PydanticCustomError("timestamp_format", "is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        # The data contract stamps everything in UTC; a naive stamp is read the same way.
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00: before year 1 in UTC
        raise PydanticCustomError("timestamp_range", "is out of range in UTC") from None


Text = Annotated[str, Strict(), AfterValidator(_not_blank)]
"""A JSON string with something in it other than spaces (kept as sent)."""
Amount = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A finite JSON number (an integer is taken as a float; a boolean is not a number)."""
UtcTimestamp = Annotated[datetime, BeforeValidator(_iso_timestamp)]
"""An ISO-8601 string, as a timezone-aware UTC datetime."""


@dataclass(frozen=True)
class Transaction:
    """One raw card transaction as the client sends it, validated."""

    transaction_id: Text
    card_id: Text
    merchant_id: Text
    amount: Amount
    currency: Text
    country: Text
    merchant_category: Text
    channel: Text
    event_timestamp: UtcTimestamp
    """Timezone-aware, UTC."""

    @property
    def event_hour(self) -> int:
        """Hour of day (0-23, UTC): the request-time input of the on-demand features."""
        return self.event_timestamp.hour


class _Envelope(BaseModel):
    """`{"instances": [...]}`; other keys are ignored. The instances are validated by `_INSTANCES`."""

    model_config = ConfigDict(extra="ignore")

    instances: Annotated[list[Any], Strict(), Field(min_length=1)]


_ENVELOPE = TypeAdapter(_Envelope)
_INSTANCES = TypeAdapter(list[Transaction])


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


class _Unrepresentable:
    """A JSON number no 64-bit float holds (NaN, Infinity, 1e400, a 400-digit integer), as written."""

    def __init__(self, text: str) -> None:
        self.text = text


def _float_or_mark(text: str) -> float | _Unrepresentable:
    value = float(text)
    return value if math.isfinite(value) else _Unrepresentable(text)


def _int_or_mark(text: str) -> int | _Unrepresentable:
    try:
        value = int(text)
        float(value)  # what KServe's decoder makes of an integer beyond 64 bits; OverflowError beyond ~1.8e308
    except (ValueError, OverflowError):  # ValueError: more digits than Python converts
        return _Unrepresentable(text)
    return value


def explain_undecodable(body: bytes, decoder_error: str) -> InvalidRequest:
    """Why KServe's JSON decoder (orjson) refused a body, as a 400 naming the field: the first number in it
    that no 64-bit float holds (NaN and Infinity literals, 1e400, huge integers), found by reading the body
    again with Python's lenient parser; else the body is simply not JSON and the decoder's message says where.
    Only called for a body the decoder refused, so valid requests are parsed once."""
    try:
        value = json.loads(
            body, parse_float=_float_or_mark, parse_int=_int_or_mark, parse_constant=_Unrepresentable
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        value = None
    found = _first_unrepresentable(value)
    if found is None:
        return InvalidRequest(f"the body is not valid JSON ({decoder_error})")
    path, number = found
    message = f"must be a finite number within the range of a 64-bit float, got {number.text[:40]}"
    if len(path) >= 3 and path[0] == "instances" and isinstance(path[1], int):
        return InvalidRequest(message, field=_dotted(path[2:]), index=path[1])
    return InvalidRequest(message, field=_dotted(path))


def _first_unrepresentable(value: Any) -> tuple[tuple[str | int, ...], _Unrepresentable] | None:
    """The path of the first unrepresentable number in document order (iterative: bodies may nest deeply)."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _Unrepresentable):
            return path, item
        if isinstance(item, dict):
            stack.extend(((*path, key), child) for key, child in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend(((*path, i), child) for i, child in reversed(list(enumerate(item))))
    return None


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def parse_instances(body: Any, max_instances: int) -> list[Transaction]:
    """Validate `{"instances": [transaction, ...]}` and return the transactions in order."""
    try:
        instances = _ENVELOPE.validate_python(body).instances
    except ValidationError as e:
        raise _envelope_error(e.errors(include_url=False)[0]) from None
    if len(instances) > max_instances:
        raise TooManyInstances(
            f"has {len(instances)} transactions; at most {max_instances} per request "
            "(FLYWHEEL_TRANSFORMER_MAX_INSTANCES): split the batch",
            field="instances",
        )
    try:
        return _INSTANCES.validate_python(instances)
    except ValidationError as e:
        problems = [_problem(error) for error in e.errors(include_url=False)[:MAX_REPORTED_PROBLEMS]]
    first = problems[0]
    first.problems = [{"index": p.index, "field": p.field, "error": p.reason} for p in problems]
    raise first


def _envelope_error(error: ErrorDetails) -> InvalidRequest:
    kind = error["type"]
    if kind == "missing":
        return InvalidRequest('is required: send {"instances": [transaction, ...]}', field="instances")
    if error["loc"] == ("instances",) and kind == "list_type":
        return InvalidRequest(f"must be a list of transactions, got {_json_type(error['input'])}", field="instances")
    if error["loc"] == ("instances",) and kind == "too_short":
        return InvalidRequest("must contain at least one transaction", field="instances")
    return InvalidRequest('the body must be a JSON object {"instances": [transaction, ...]}')


def _problem(error: ErrorDetails) -> InvalidRequest:
    """One pydantic error at (index, field) as this service's InvalidRequest."""
    index, *rest = error["loc"]
    field = str(rest[0]) if rest else None
    return InvalidRequest(_message(error, field), field=field, index=int(index))


def _message(error: ErrorDetails, field: str | None) -> str:
    kind, value = error["type"], error.get("input")
    if field is None:
        return f"must be a JSON object with the transaction's fields, got {_json_type(value)}"
    if kind == "missing" or value is None:
        return "is required"
    if kind == "string_type":
        return f"must be a string, got {_json_type(value)}"
    if kind == "blank":
        return "must not be empty"
    if kind == "finite_number" or (kind == "float_type" and type(value) is int):  # an integer beyond float range
        return "must be a finite number"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, got {_json_type(value)}"
    if kind == "timestamp_type":
        return f"must be an ISO-8601 string, got {_json_type(value)}"
    if kind == "timestamp_format":
        return f"'{str(value)[:64]}' is not an ISO-8601 timestamp (e.g. 2026-11-23T12:00:00Z)"
    if kind == "timestamp_range":
        return f"'{str(value)[:64]}' is outside the years 1-9999 once converted to UTC"
    return str(error["msg"])  # a check added later: pydantic's own words, still at its location


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
