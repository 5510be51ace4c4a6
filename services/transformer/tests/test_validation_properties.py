"""Property tests of the request parsers (`_validation`): whatever a V1 body holds, the parsers return
validated transactions or raise this service's 4xx error (`InvalidRequest` and its subclasses,
`UnsupportedMediaType`), never another exception; and what they return holds what the contract promises."""

from __future__ import annotations

import json
import math
from datetime import timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_transformer._errors import InvalidRequest, RequestError, UnsupportedMediaType, status_of
from flywheel_transformer._validation import REQUIRED_FIELDS, decode_body, explain_undecodable, parse_instances

from conftest import transaction

PROPERTY = settings(max_examples=300, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
MAX_INSTANCES = 5

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "   ", "2026-11-23T00:03:54Z", "2026-02-30T00:00:00", "0001-01-01T00:00:00+01:00", "12.5"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELD_VALUES = SCALARS | st.lists(SCALARS, max_size=2)


@st.composite
def near_valid_instance(draw: st.DrawFn) -> dict:
    """A valid transaction with some fields removed, replaced by odd values, or extra keys added."""
    instance = transaction()
    for name in draw(st.lists(st.sampled_from(sorted(REQUIRED_FIELDS)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del instance[name]
        else:
            instance[name] = draw(FIELD_VALUES)
    instance.update(draw(st.dictionaries(st.text(max_size=8), SCALARS, max_size=2)))
    return instance


BODIES = (
    JSON
    | st.fixed_dictionaries({"instances": JSON})
    | st.fixed_dictionaries({"instances": st.lists(near_valid_instance(), max_size=MAX_INSTANCES + 2)})
    | st.fixed_dictionaries({"instances": st.lists(near_valid_instance() | JSON, min_size=1, max_size=4)})
)


def assert_is_a_request_error(error: BaseException) -> None:
    assert isinstance(error, RequestError), repr(error)
    assert 400 <= status_of(error) < 500
    if isinstance(error, InvalidRequest) and error.field is not None:
        assert error.field, "a named field is never empty"


@PROPERTY
@given(body=BODIES)
def test_any_decoded_body_gives_transactions_or_a_4xx(body) -> None:
    try:
        transactions = parse_instances(body, MAX_INSTANCES)
    except RequestError as e:
        assert_is_a_request_error(e)
        return
    assert 1 <= len(transactions) <= MAX_INSTANCES
    for parsed in transactions:
        assert math.isfinite(parsed.amount)
        assert parsed.event_timestamp.utcoffset() == timezone.utc.utcoffset(None)
        assert 0 <= parsed.event_hour <= 23
        for name in REQUIRED_FIELDS[:-2]:  # the string fields
            value = getattr(parsed, name)
            assert isinstance(value, str) and value.strip()


@PROPERTY
@given(
    raw=st.binary(max_size=200) | BODIES.map(lambda b: json.dumps(b, allow_nan=True).encode()),
    content_type=st.sampled_from([None, "application/json", "application/json; charset=utf-8", "text/plain", "x+json"]),
)
def test_any_raw_body_decodes_or_gives_a_4xx(raw: bytes, content_type: str | None) -> None:
    try:
        decoded = decode_body(raw, content_type)
    except (InvalidRequest, UnsupportedMediaType) as e:
        assert_is_a_request_error(e)
        return
    try:
        parse_instances(decoded, MAX_INSTANCES)
    except RequestError as e:
        assert_is_a_request_error(e)


@PROPERTY
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode), reason=st.text(max_size=40))
def test_explaining_an_undecodable_body_always_gives_a_400(raw: bytes, reason: str) -> None:
    error = explain_undecodable(raw, reason)
    assert isinstance(error, InvalidRequest) and status_of(error) == 400


def test_explaining_names_the_first_number_no_float_holds() -> None:
    error = explain_undecodable(b'{"instances": [{"amount": 1e400}]}', "x")
    assert (error.field, error.index) == ("amount", 0)
