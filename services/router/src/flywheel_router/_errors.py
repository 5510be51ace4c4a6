"""The router's error family: one root, typed subclasses, one table from class to HTTP status.

```
RouterError
 +-- ConfigError          a bad setting (start-up only; exit 2)
 +-- RequestError         the caller's request cannot be routed (4xx; only through a subclass)
 |    +-- BadRequest          400: a malformed body or header, named
 |    +-- Unauthorized        401: the admin API without the bearer token
 |    +-- NotFound            404: no such route or path
 |    +-- MethodNotAllowed    405: with an Allow header
 |    +-- Conflict            409: a route write with a stale generation
 |    +-- PayloadTooLarge     413
 |    +-- UnsupportedMediaType 415
 +-- UpstreamError        502: the version that should answer cannot
 |    +-- UpstreamUnavailable 503: connection refused or timed out, after the retry on the stable
 +-- RouteSourceError     the route source (file, ConfigMap) cannot be read or written (503)
```
Every class is also one of flywheel_contracts.errors' standard errors (`BadRequest` is
`flywheel_contracts.errors.BadRequest` too), which gives its status and `code`; bodies are that module's one
shape, `{"error": "<what to do>", "code": "<code>"}`, like every Flywheel service. An exception outside the
family is a bug: the apps answer it 500 with a generic body and log the traceback (`respond_unexpected`).
Messages say what to do.
"""

from __future__ import annotations

import orjson

from flywheel_contracts import errors as family


class RouterError(family.FlywheelError):
    """Root of every error the router raises on purpose."""


class ConfigError(RouterError):
    """A setting has a value the router cannot start with."""


class RequestError(RouterError):
    """The request cannot be served as sent."""


class BadRequest(family.BadRequest, RequestError):
    """Malformed input; the message names the field or header."""


class Unauthorized(family.Unauthorized, RequestError):
    """The admin API needs `Authorization: Bearer <token>`."""


class NotFound(family.NotFound, RequestError):
    """No such route, model or path."""


class MethodNotAllowed(family.MethodNotAllowed, RequestError):
    """The path exists but not with this method."""

    def __init__(self, message: str, allow: tuple[str, ...]) -> None:
        super().__init__(message, headers={"allow": ", ".join(allow)})
        self.allow = allow


class Conflict(family.Conflict, RequestError):
    """A write based on a stale generation of the route."""


class PayloadTooLarge(family.PayloadTooLarge, RequestError):
    """The body is over FLYWHEEL_ROUTER_MAX_BODY_BYTES."""


class UnsupportedMediaType(family.UnsupportedMediaType, RequestError):
    """The admin API takes JSON only."""


class UpstreamError(family.UpstreamFailed, RouterError):
    """The version chosen to answer could not."""


class UpstreamUnavailable(family.Unavailable, UpstreamError):
    """Connection refused, reset or timed out (after the candidate's one retry on the stable)."""


class RouteSourceError(family.Unavailable, RouterError):
    """The route source could not be read or written; routing keeps the last routes it had."""


def status_of(error: BaseException) -> int:
    """The HTTP status of an error: its class's, from flywheel_contracts.errors (500 outside the family)."""
    return family.status_of(error)


def error_body(error: BaseException) -> bytes:
    """The JSON body of an error answer, flywheel_contracts.errors' one shape."""
    return orjson.dumps(family.error_body(error))
