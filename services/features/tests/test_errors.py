"""Error answers: flywheel_contracts.errors' body shape; a bug is a 500 with a generic body and a logged traceback."""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request

from flywheel_features._errors import (
    BodyTooLarge,
    Unauthorized,
    UnknownRoute,
    error_response,
    status_of,
)


def _request(path: str) -> Request:
    return Request({"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""})


def test_a_bug_outside_a_request_endpoint_is_a_500_with_a_generic_body_and_a_logged_traceback(caplog):
    response = asyncio.run(error_response(_request("/materialize"), ValueError("secret detail from a bug")))
    assert response.status_code == 500
    assert json.loads(response.body) == {"error": "internal error: the service logged the details", "code": "internal"}
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [ValueError]


def test_a_bad_request_body_names_the_problem_with_the_shared_code():
    response = asyncio.run(error_response(_request("/get-online-features"), ValueError("no ':' in 'x'")))
    assert response.status_code == 400
    assert json.loads(response.body) == {"error": "no ':' in 'x'", "code": "bad_request", "type": "ValueError"}


def test_the_guard_s_refusals_take_the_shared_statuses():
    assert [status_of(e) for e in (Unauthorized({"error": "send it", "code": "unauthorized"}), UnknownRoute("u"),
                                   BodyTooLarge("b", 1))] == [401, 404, 413]
    assert status_of(KeyError("k")) == 500
