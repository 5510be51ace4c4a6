"""flywheel_contracts.errors: the one error family, its status table and its one body shape."""

from __future__ import annotations

import pytest

from flywheel_contracts import errors
from flywheel_contracts.errors import (
    INTERNAL_BODY,
    BadRequest,
    FlywheelError,
    MethodNotAllowed,
    NotFound,
    error_body,
    status_of,
)

STANDARD = {
    "BadRequest": (400, "bad_request"),
    "Unauthorized": (401, "unauthorized"),
    "NotFound": (404, "not_found"),
    "MethodNotAllowed": (405, "method_not_allowed"),
    "Conflict": (409, "conflict"),
    "PayloadTooLarge": (413, "payload_too_large"),
    "UnsupportedMediaType": (415, "unsupported_media_type"),
    "Unprocessable": (422, "unprocessable"),
    "TooManyRequests": (429, "too_many_requests"),
    "InternalError": (500, "internal"),
    "UpstreamFailed": (502, "upstream_failed"),
    "Unavailable": (503, "unavailable"),
}


def test_the_public_names_are_the_family_and_its_two_functions():
    assert set(errors.__all__) == {
        *STANDARD,
        "FlywheelError",
        "INTERNAL_BODY",
        "Overloaded",
        "code_of_status",
        "error_body",
        "status_of",
    }


@pytest.mark.parametrize(("name", "expected"), sorted(STANDARD.items()))
def test_each_standard_error_has_its_status_and_code(name, expected):
    cls = getattr(errors, name)
    error = cls("what to do")
    assert issubclass(cls, FlywheelError)
    assert (status_of(error), error.code) == expected
    assert error_body(error) == {"error": "what to do", "code": expected[1]}


def test_the_codes_are_distinct_and_the_root_is_internal():
    codes = [code for name, (_, code) in STANDARD.items()]
    assert len(set(codes)) == len(codes)
    assert (FlywheelError.status, FlywheelError.code) == (500, "internal")


def test_the_body_names_the_field_and_carries_a_subclass_s_details():
    class UnknownThing(NotFound):
        def __init__(self, message: str, thing: str) -> None:
            super().__init__(message, field="thing")
            self.thing = thing

        def details(self):
            return {**super().details(), "thing": self.thing}

    assert error_body(UnknownThing("no such thing: list them at /things", "x")) == {
        "error": "no such thing: list them at /things",
        "code": "not_found",
        "field": "thing",
        "thing": "x",
    }


def test_headers_travel_with_the_error():
    error = MethodNotAllowed("use POST", headers={"Allow": "POST"})
    assert error.headers == {"Allow": "POST"}
    assert BadRequest("x").headers == {}


def test_a_service_class_takes_the_status_of_its_standard_parent():
    class ServiceError(FlywheelError):
        pass

    class ServiceOops(ServiceError):
        pass

    class ServiceMissing(NotFound, ServiceError):
        pass

    class ServiceGone(errors.Unavailable, ServiceMissing):  # the standard class first: its status wins
        pass

    assert status_of(ServiceMissing("m")) == 404
    assert status_of(ServiceGone("g")) == 503
    assert error_body(ServiceMissing("m"))["code"] == "not_found"
    assert status_of(ServiceOops("o")) == 500  # no standard parent: internal, never a guess


@pytest.mark.parametrize("exc", [ValueError("secret path /etc/x"), KeyError("k"), RuntimeError(), TypeError("t")])
def test_an_exception_outside_the_family_is_a_500_with_a_generic_body(exc):
    assert status_of(exc) == 500
    assert error_body(exc) == INTERNAL_BODY
    assert "secret" not in str(error_body(exc))


def test_a_framework_status_gets_the_standard_code():
    assert errors.code_of_status(405) == "method_not_allowed"
    assert errors.code_of_status(404) == "not_found"
    assert errors.code_of_status(418) == "bad_request"
    assert errors.code_of_status(504) == "internal"


def test_overloaded_is_a_503_with_its_own_code_that_carries_retry_after():
    error = errors.Overloaded("shed: retry after 1 s", headers={"Retry-After": "1"})
    assert isinstance(error, errors.Unavailable)
    assert (status_of(error), error_body(error)) == (503, {"error": "shed: retry after 1 s", "code": "overloaded"})
    assert error.headers == {"Retry-After": "1"}
    assert errors.code_of_status(503) == "unavailable"  # a 503 the family did not raise is not called shedding
