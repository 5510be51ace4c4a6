"""The drift service's one exception family and the single table that maps it to HTTP statuses.

    DriftError
    ├── ConfigError              a setting is invalid (start-up, never HTTP)
    ├── ReferenceUnavailable     a model version's reference or drift state cannot be used
    └── RequestError             anything that ends one request (500 unless a subclass below)
        ├── InvalidEvent             400  malformed event, header or body; names the field
        │   └── UnsupportedEventType 400  a ce-type this sink does not read
        ├── Unauthorized             401  a write without its credential (ingest or labels token)
        ├── UnknownModel             404  a model this service does not monitor
        ├── UnknownVersion           404  a batch naming a version the model repository does not publish
        ├── UnknownRoute             404  no such path
        ├── MethodNotAllowed         405  the path exists, the method does not (an `Allow` header lists them)
        ├── PayloadTooLarge          413  body over FLYWHEEL_DRIFT_MAX_BODY_BYTES
        ├── UnsupportedMediaType     415  the body is not JSON
        ├── Backlogged               429  too much accepted work not yet analysed; retry later
        └── NotReady                 503  the store is still opening or replaying

Every class is a flywheel_contracts.errors error too (`DriftError` its `FlywheelError`, each request error
also the standard class of its status, e.g. `UnknownModel` a `NotFound`), which gives the status and the
`code`. A body is that module's shape plus this service's finer `type`: `{"error": "<what to do>",
"code": "not_found", "type": "unknown_model", "field"?: ...}`; `code` is shared by every service, `type`
names the drift case (the 401's `type` and `code` are both "unauthorized"). An exception outside the family
is a bug: 500 with a generic body, its traceback logged (never a guessed 400).

Messages say what to do. This module imports no framework: the server turns `error_body` into JSON.
"""

from __future__ import annotations

from typing import Any

from flywheel_contracts import errors as family


class DriftError(family.FlywheelError):
    """Root of every error the drift service raises on purpose."""


class ConfigError(DriftError):
    """A setting has a bad value; the message names the environment variable."""


class ReferenceUnavailable(DriftError):
    """A model version's drift reference or drift state is missing, unreadable or inconsistent."""


class RequestError(DriftError):
    """An error that ends one request; `kind` is a stable machine-readable name."""

    kind = "request_error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field or None)


class InvalidEvent(family.BadRequest, RequestError):
    kind = "invalid_event"


class InvalidRequest(family.BadRequest, RequestError):
    """A body or query parameter of the service's other routes (the skew check's) that is not what it takes."""

    kind = "invalid_request"


class UnsupportedEventType(InvalidEvent):
    kind = "unsupported_event_type"


class Unauthorized(family.Unauthorized, RequestError):
    """The request lacks the credential its route needs; the message names the credential and the setting,
    never the token, and nothing about the request's content."""

    kind = "unauthorized"


class UnknownModel(family.NotFound, RequestError):
    kind = "unknown_model"


class UnknownVersion(family.NotFound, RequestError):
    kind = "unknown_version"


class UnknownRoute(family.NotFound, RequestError):
    kind = "unknown_route"


class MethodNotAllowed(family.MethodNotAllowed, RequestError):
    kind = "method_not_allowed"

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.headers["allow"] = allow


class PayloadTooLarge(family.PayloadTooLarge, RequestError):
    kind = "payload_too_large"


class UnsupportedMediaType(family.UnsupportedMediaType, RequestError):
    kind = "unsupported_media_type"


class Backlogged(family.TooManyRequests, RequestError):
    kind = "backlogged"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers["retry-after"] = str(retry_after_s)


class NotReady(family.Unavailable, RequestError):
    kind = "not_ready"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.headers["retry-after"] = "1"


def status_of(error: BaseException) -> int:
    """The HTTP status of an error: its class's, from flywheel_contracts.errors (500 outside the family)."""
    return family.status_of(error)


def error_body(error: BaseException) -> dict[str, Any]:
    """flywheel_contracts.errors' body plus the drift `type` of a request error."""
    body = family.error_body(error)
    if isinstance(error, RequestError):
        body["type"] = error.kind
    return body
