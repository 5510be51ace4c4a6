"""The router's error family: one root, typed subclasses, one table from class to HTTP status.

```
RouterError
 +-- ConfigError          a bad setting (start-up only; exit 2)
 +-- RequestError         the caller's request cannot be routed (4xx)
 |    +-- BadRequest          400: a malformed body or header, named
 |    +-- Unauthorized        401: the admin API without the bearer token
 |    +-- NotFound            404: no such route or path
 |    +-- MethodNotAllowed    405: with an Allow header
 |    +-- Conflict            409: a route write with a stale generation
 |    +-- PayloadTooLarge     413
 |    +-- UnsupportedMediaType 415
 +-- UpstreamError        the version that should answer cannot (5xx)
 |    +-- UpstreamUnavailable 503: connection refused or timed out, after the retry on the stable
 +-- RouteSourceError     the route source (file, ConfigMap) cannot be read or written (503)
```
Messages say what to do; bodies are `{"error": "..."}` like every Flywheel service.
"""

from __future__ import annotations

import orjson


class RouterError(Exception):
    """Root of every error the router raises on purpose."""


class ConfigError(RouterError):
    """A setting has a value the router cannot start with."""


class RequestError(RouterError):
    """The request cannot be served as sent."""


class BadRequest(RequestError):
    """Malformed input; the message names the field or header."""


class Unauthorized(RequestError):
    """The admin API needs `Authorization: Bearer <token>`."""


class NotFound(RequestError):
    """No such route, model or path."""


class MethodNotAllowed(RequestError):
    """The path exists but not with this method."""

    def __init__(self, message: str, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow


class Conflict(RequestError):
    """A write based on a stale generation of the route."""


class PayloadTooLarge(RequestError):
    """The body is over FLYWHEEL_ROUTER_MAX_BODY_BYTES."""


class UnsupportedMediaType(RequestError):
    """The admin API takes JSON only."""


class UpstreamError(RouterError):
    """The version chosen to answer could not."""


class UpstreamUnavailable(UpstreamError):
    """Connection refused, reset or timed out (after the candidate's one retry on the stable)."""


class RouteSourceError(RouterError):
    """The route source could not be read or written; routing keeps the last routes it had."""


STATUS: dict[type[RouterError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    MethodNotAllowed: 405,
    Conflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    UpstreamUnavailable: 503,
    UpstreamError: 502,
    RouteSourceError: 503,
    RequestError: 400,
    RouterError: 500,
}


def status_of(error: RouterError) -> int:
    """The HTTP status of an error: the entry of its nearest class in STATUS."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
