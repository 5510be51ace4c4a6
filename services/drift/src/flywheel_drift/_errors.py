"""The drift service's one exception family and the single table that maps it to HTTP statuses.

    DriftError
    ├── ConfigError              a setting is invalid (start-up, never HTTP)
    ├── ReferenceUnavailable     a model version's reference or drift state cannot be used
    └── RequestError             anything that ends one request; `status_of` gives its HTTP status
        ├── InvalidEvent             400  malformed event, header or body; names the field
        │   └── UnsupportedEventType 400  a ce-type this sink does not read
        ├── Unauthorized             401  a write without its credential (ingest or labels token)
        ├── UnknownModel             404  a model this service does not monitor
        ├── UnknownVersion           404  a batch naming a version the model repository does not publish
        ├── PayloadTooLarge          413  body over FLYWHEEL_DRIFT_MAX_BODY_BYTES
        ├── UnsupportedMediaType     415  the body is not JSON
        ├── Backlogged               429  too much accepted work not yet analysed; retry later
        └── NotReady                 503  the store is still opening or replaying

Messages say what to do. This module imports no framework: the server turns `error_body` into JSON.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class DriftError(Exception):
    """Root of every error the drift service raises on purpose."""


class ConfigError(DriftError):
    """A setting has a bad value; the message names the environment variable."""


class ReferenceUnavailable(DriftError):
    """A model version's drift reference or drift state is missing, unreadable or inconsistent."""


class RequestError(DriftError):
    """An error that ends one request; `kind` is a stable machine-readable name."""

    kind = "request_error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def details(self) -> dict[str, Any]:
        return {"field": self.field} if self.field else {}


class InvalidEvent(RequestError):
    kind = "invalid_event"


class UnsupportedEventType(InvalidEvent):
    kind = "unsupported_event_type"


class Unauthorized(RequestError):
    """The request lacks the credential its route needs; the message names the credential and the setting,
    never the token, and nothing about the request's content."""

    kind = "unauthorized"


class UnknownModel(RequestError):
    kind = "unknown_model"


class UnknownVersion(RequestError):
    kind = "unknown_version"


class PayloadTooLarge(RequestError):
    kind = "payload_too_large"


class UnsupportedMediaType(RequestError):
    kind = "unsupported_media_type"


class Backlogged(RequestError):
    kind = "backlogged"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(RequestError):
    kind = "not_ready"


_STATUS: dict[type[RequestError], HTTPStatus] = {
    InvalidEvent: HTTPStatus.BAD_REQUEST,
    UnsupportedEventType: HTTPStatus.BAD_REQUEST,
    Unauthorized: HTTPStatus.UNAUTHORIZED,
    UnknownModel: HTTPStatus.NOT_FOUND,
    UnknownVersion: HTTPStatus.NOT_FOUND,
    PayloadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    Backlogged: HTTPStatus.TOO_MANY_REQUESTS,
    NotReady: HTTPStatus.SERVICE_UNAVAILABLE,
}


def status_of(error: RequestError) -> int:
    """The HTTP status of a request error (the most specific class in the table wins)."""
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return int(_STATUS[cls])
    return int(HTTPStatus.BAD_REQUEST)


def error_body(error: RequestError) -> dict[str, Any]:
    return {"error": error.message, "type": error.kind, **error.details()}
