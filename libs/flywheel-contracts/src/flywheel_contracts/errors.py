"""One error family for every Flywheel service: a root, one subclass per HTTP answer, one body shape.

Here in flywheel-contracts (no framework, no pydantic needed) because every service installs it, the router
and the controller included, and because the body is part of the contract between services: the controller
reads the router's and the drift service's errors, the transformer the feature server's and the predictor's,
KServe's client the predictor's. Each service subclasses these, the standard class first so that its status
wins over anything a service parent inherits (`class UnknownModel(NotFound, RequestError)`): the service's own
names stay, and the status and code come from here.

    FlywheelError               500  internal              root; never raised itself
    ├── BadRequest              400  bad_request           malformed input; `field` names what
    ├── Unauthorized            401  unauthorized          a missing or wrong credential
    ├── NotFound                404  not_found             no such model, version, route or path
    ├── MethodNotAllowed        405  method_not_allowed    (an `Allow` header goes in `headers`)
    ├── Conflict                409  conflict              a write based on a stale generation
    ├── PayloadTooLarge         413  payload_too_large     the body is over a configured limit
    ├── UnsupportedMediaType    415  unsupported_media_type
    ├── Unprocessable           422  unprocessable         well-formed but not usable as sent
    ├── TooManyRequests         429  too_many_requests     back off (a `Retry-After` in `headers`)
    ├── InternalError           500  internal              this service failed on valid input
    ├── UpstreamFailed          502  upstream_failed       a service this one called answered badly
    └── Unavailable             503  unavailable           not ready, or a dependency is down; retry
        └── Overloaded          503  overloaded            shed: more requests than the service admits
                                                           (a `Retry-After` in `headers`); retry

The body of every error answer is `error_body(exc)`: `{"error": "<message>", "code": "<code>", ...extra}`;
`error` is what a person reads (and what KServe's client reports), `code` is what a program switches on.
`status_of(exc)` is 500 for anything that is not a FlywheelError: an exception nobody meant to raise is a bug
of this service, answered with `INTERNAL_BODY` and logged with its traceback, never guessed to be the
caller's fault (4xx) or an upstream's (502).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "INTERNAL_BODY",
    "BadRequest",
    "Conflict",
    "FlywheelError",
    "InternalError",
    "MethodNotAllowed",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "UpstreamFailed",
    "code_of_status",
    "error_body",
    "status_of",
]


class FlywheelError(Exception):
    """Root of every error a Flywheel service raises on purpose; the message says what to do.

    `status` and `code` are class attributes (the nearest class that sets them wins); `field` names the part
    of the request that is wrong; `headers` go on the HTTP answer (WWW-Authenticate, Allow, Retry-After)."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(
        self, message: str = "", *, field: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers: dict[str, str] = dict(headers or {})

    def details(self) -> dict[str, Any]:
        """Keys the body carries besides `error` and `code`; subclasses add theirs."""
        return {"field": self.field} if self.field is not None else {}


class BadRequest(FlywheelError):
    status, code = 400, "bad_request"


class Unauthorized(FlywheelError):
    status, code = 401, "unauthorized"


class NotFound(FlywheelError):
    status, code = 404, "not_found"


class MethodNotAllowed(FlywheelError):
    status, code = 405, "method_not_allowed"


class Conflict(FlywheelError):
    status, code = 409, "conflict"


class PayloadTooLarge(FlywheelError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(FlywheelError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(FlywheelError):
    status, code = 422, "unprocessable"


class TooManyRequests(FlywheelError):
    status, code = 429, "too_many_requests"


class InternalError(FlywheelError):
    status, code = 500, "internal"


class UpstreamFailed(FlywheelError):
    status, code = 502, "upstream_failed"


class Unavailable(FlywheelError):
    status, code = 503, "unavailable"


class Overloaded(Unavailable):
    """Shed by admission control (flywheel_contracts.admission): this replica already holds all the requests it
    can answer within its latency budget. 503 rather than 429: the limit is the server's, not the caller's
    quota, so another replica (or the same one after `Retry-After`) may answer at once."""

    code = "overloaded"


INTERNAL_BODY: dict[str, Any] = {"error": "internal error: the service logged the details", "code": "internal"}
"""The body of a 500 for an exception no one meant to raise; the message and traceback go to the log only."""


def status_of(exc: BaseException) -> int:
    """The HTTP status of an exception: its class's `status` for a FlywheelError, 500 for anything else."""
    return int(exc.status) if isinstance(exc, FlywheelError) else 500


def error_body(exc: BaseException) -> dict[str, Any]:
    """The JSON body of an error answer: `{"error": message, "code": code, **details}`.

    Anything not a FlywheelError gets `INTERNAL_BODY`: its text may hold paths, inputs or secrets."""
    if not isinstance(exc, FlywheelError):
        return dict(INTERNAL_BODY)
    return {"error": exc.message or str(exc), "code": exc.code, **exc.details()}


def code_of_status(status: int) -> str:
    """The code of a status this family did not raise (a framework's own 404 or 405): the standard class's
    code, else "bad_request" for another 4xx and "internal" for anything else."""
    for cls in _STANDARD:
        if cls.status == status:
            return cls.code
    return "bad_request" if 400 <= status < 500 else "internal"


_STANDARD: tuple[type[FlywheelError], ...] = (
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    TooManyRequests,
    InternalError,
    UpstreamFailed,
    Unavailable,
)
