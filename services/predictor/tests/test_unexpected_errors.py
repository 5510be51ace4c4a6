"""A bug inside a request is a 500 with a generic body and one logged traceback, never a guessed 4xx/502."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx

from flywheel_predictor._errors import (
    InvalidRequest,
    PredictorError,
    error_body,
    status_of,
)
from flywheel_predictor._fastpath import FastPath


class _Counted:
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def requests(self, protocol: str, status: int) -> SimpleNamespace:
        return SimpleNamespace(inc=lambda: self.statuses.append(status))


async def _never_reached(scope, receive, send) -> None:
    raise AssertionError("the fast path answers inference itself")


def test_a_bug_in_the_fast_path_is_a_500_with_a_generic_body_and_one_logged_traceback(caplog):
    metrics = _Counted()
    model = SimpleNamespace(version="v1", metrics=metrics)
    fast = FastPath(_never_reached, SimpleNamespace(name="fraud", default=model), max_body_bytes=1 << 20)

    async def broken(model, body, binary_header):
        raise RuntimeError("secret detail from a bug")

    fast.handlers["v1"] = broken

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fast), base_url="http://predictor") as c:
            return await c.post("/v1/models/fraud:predict", json={"instances": [[1.0]]})

    r = asyncio.run(go())
    assert r.status_code == 500
    assert r.json() == {"error": "internal error: the service logged the details", "code": "internal"}
    assert [rec.exc_info[0] for rec in caplog.records if rec.exc_info] == [RuntimeError]
    assert metrics.statuses == [500]


def test_error_bodies_carry_the_shared_code_and_unmapped_errors_are_500():
    assert status_of(InvalidRequest("x")) == 400
    assert error_body(InvalidRequest("name the field")) == b'{"error":"name the field","code":"bad_request"}'
    assert status_of(PredictorError("no status")) == 500 and status_of(KeyError("k")) == 500
