"""The service's errors and how they map to HTTP.

    FeaturesError            root; never raised itself
    ├── ConfigError          a setting is invalid (start-up; exit code 2)
    ├── NotReady             registry or online store not usable yet (HTTP 503 on /ready)
    ├── StoreError           apply / materialize / historical retrieval failed (CLI exit code 1)
    └── Refused              the guard turned a request away before Feast saw it (see _guard)
        ├── Unauthorized     401  no or wrong token for the route (with WWW-Authenticate)
        ├── UnknownRoute     404  a path this service does not serve
        ├── BodyTooLarge     413  a body over FLYWHEEL_FEATURES_MAX_BODY_BYTES
        ├── StreamOff        409  /stream/transactions on a server with WORKERS > 1 (one writer only)
        └── InvalidStream    422  a /stream/transactions body that is not its JSON shape (names the field)

Feast's own feature server raises FeastError subclasses that carry their HTTP status (404 for an
unknown feature view or service, missing request data), and plain KeyError / ValueError / TypeError for
request bodies it cannot read (unknown feature name, missing join key, a reference without ':'). Feast
answers all of them through a catch-all `Exception` handler, which Starlette runs *after* the error has
escaped the app: the response is sent, the error logged with a traceback, and the keep-alive connection
dropped, so a client's next pooled request fails. `error_response` handles them inside the app instead.
Every error body is flywheel_contracts.errors' shape plus the exception's class: {"error": "<what is wrong>",
"code": "<code>", "type": "<exception class>"}; a 401 is flywheel_contracts.auth's {"error": "<what to send>",
"code": "unauthorized"}, the same in every service. (Until this family was shared, `error` held the class
and `message` the text.) The guard's refusals are also the standard classes of their statuses.
"""

from __future__ import annotations

import logging
from typing import Any

from feast.errors import FeastError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from flywheel_contracts import errors as family


class FeaturesError(family.FlywheelError):
    """Root of the features service's errors; the message says what to do."""


class ConfigError(FeaturesError):
    """A setting has a bad value."""


class NotReady(FeaturesError):
    """The registry or the online store cannot serve yet."""


class StoreError(FeaturesError):
    """A Feast operation on the store failed."""


class Refused(FeaturesError):
    """The guard refused a request; `status_of` gives its HTTP status, `body()` its JSON answer."""

    def body(self) -> dict[str, Any]:
        return {**family.error_body(self), "type": type(self).__name__}


class Unauthorized(family.Unauthorized, Refused):
    """The route's credential is missing, wrong or not configured; carries flywheel_contracts.auth's body."""

    def __init__(self, body: dict[str, str]) -> None:
        super().__init__(body["error"])
        self._body = body

    def body(self) -> dict[str, Any]:
        return self._body


class UnknownRoute(family.NotFound, Refused):
    """A path outside the guard's allowlist (Feast's docs, UI and endpoints Flywheel does not use)."""


class BodyTooLarge(family.PayloadTooLarge, Refused):
    """The request body is over the limit; the answer names it in `limit_bytes`."""

    def __init__(self, message: str, limit_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes

    def body(self) -> dict[str, Any]:
        return {**super().body(), "limit_bytes": self.limit_bytes}


class StreamOff(family.Conflict, Refused):
    """The stream step keeps its card state in one process; a multi-worker server does not run it."""


class InvalidStream(family.Unprocessable, Refused):
    """A /stream/transactions body the stream step cannot read; `field` names the first bad one."""


def status_of(refusal: BaseException) -> int:
    """The HTTP status of a refusal: its class's, from flywheel_contracts.errors (500 outside the family)."""
    return family.status_of(refusal)


REQUEST_ENDPOINTS = frozenset({"/get-online-features", "/push", "/write-to-online-store"})
"""Endpoints whose KeyError / ValueError / TypeError come from the request body."""

MATERIALIZE_ENDPOINTS = frozenset({"/materialize", "/materialize-incremental"})
"""Endpoints where only a ValueError reading the request comes from the body; any other is the job's (500)."""

_BODY_READERS = ("_parse_materialize_timestamps", "_validate_materialize_version", "dateutil.parser")
"""Where Feast 0.67 reads a materialization request: `_parse_materialize_timestamps` (no start_ts or end_ts,
start not before end), `_validate_materialize_version` (a `version` without exactly one view) and dateutil's
parser (a timestamp that does not parse). Should Feast rename them, such a body is a 500 again, and
tests/test_fuzz.py fails."""

# Request errors by exception type -> HTTP status; a KeyError saying "not found" is a 404.
REQUEST_ERROR_STATUS: dict[type[BaseException], int] = {KeyError: 400, ValueError: 400, TypeError: 400}
HANDLED = (FeastError, *REQUEST_ERROR_STATUS)

_log = logging.getLogger("flywheel_features")


def _message(exc: BaseException) -> str:
    # KeyError's str() wraps its message in quotes.
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _reads_the_body(exc: BaseException) -> bool:
    """Whether `exc` was raised while Feast read a materialization request (its interval, views, version)."""
    frame = exc.__traceback__
    while frame is not None:
        code, module = frame.tb_frame.f_code.co_name, frame.tb_frame.f_globals.get("__name__", "")
        if code in _BODY_READERS or module.startswith(_BODY_READERS):
            return True
        frame = frame.tb_next
    return False


def _status(request: Request, exc: Exception) -> int:
    if isinstance(exc, FeastError):
        return exc.http_status_code()
    if request.url.path in MATERIALIZE_ENDPOINTS and isinstance(exc, ValueError) and _reads_the_body(exc):
        return 400
    if request.url.path in REQUEST_ENDPOINTS:
        for kind, status in REQUEST_ERROR_STATUS.items():
            if isinstance(exc, kind):
                return 404 if isinstance(exc, KeyError) and "not found" in _message(exc) else status
    return 500


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The JSON answer to an error raised while serving `request` (registered for HANDLED)."""
    status = _status(request, exc)
    if status >= 500:
        _log.exception("%s failed", request.url.path, exc_info=exc)
    if status >= 500:
        return JSONResponse(status_code=status, content=family.error_body(exc))  # the text went to the log only
    body = {"error": _message(exc), "code": family.code_of_status(status), "type": type(exc).__name__}
    return JSONResponse(status_code=status, content=body)


async def validation_error_response(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's RequestValidationError (a body that is not the route's JSON shape) as a 422 in the family's body
    naming the first bad field, not FastAPI's `{"detail": [...]}`, which broke the error shape and echoed the
    input back."""
    problems = exc.errors() if hasattr(exc, "errors") else []
    first = problems[0] if problems else {}
    loc = [str(part) for part in first.get("loc", ())]
    kind = first.get("type", "invalid")
    parts = loc[1:] if loc[:1] == ["body"] else loc
    where = ".".join(parts) if parts and kind != "json_invalid" else "body"  # json_invalid's loc is a character offset
    body = {"error": f"{where}: {first.get('msg', 'invalid request')} ({kind})", "code": family.Unprocessable.code,
            "type": "RequestValidationError", "field": where}
    return JSONResponse(status_code=family.Unprocessable.status, content=body)


async def http_error_response(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own answers (a wrong method on a Feast route: 405 with its Allow header) in the family's body,
    not FastAPI's `{"detail": ...}`."""
    status = exc.status_code
    message = f"{request.method} is not allowed on {request.url.path}" if status == 405 else str(exc.detail)
    return JSONResponse(status_code=status, headers=dict(exc.headers or {}),
                        content={"error": message, "code": family.code_of_status(status)})
