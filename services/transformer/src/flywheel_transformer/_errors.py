"""The transformer's one exception family and the single table that maps it to HTTP statuses.

    TransformerError
    ├── ConfigError             a setting is invalid (start-up, never HTTP)
    ├── ModelMetadataError      the published metadata does not fit this transformer (start-up)
    └── RequestError            anything that ends one request (500 unless a subclass below)
        ├── InvalidRequest          400  a field is missing, mistyped or not a representable number (names
        │   │                            the field and instance)
        │   ├── ImpossibleValue     422  well-formed but impossible: a negative amount, one over MAX_AMOUNT,
        │   │                            an event_timestamp in the future or absurdly old (names the field)
        │   └── TooManyInstances    413  more transactions than FLYWHEEL_TRANSFORMER_MAX_INSTANCES
        ├── MethodNotAllowed        405  a served path asked with a method it does not take (`Allow` header)
        ├── BodyTooLarge            413  the body is over FLYWHEEL_TRANSFORMER_MAX_BODY_BYTES (refused unread)
        ├── Unauthorized            401  x-flywheel-debug-features without the transformer debug token
        ├── InvalidHeader           400  a request header has a bad value (names the header)
        ├── VersionNotPublished     404  the requested model version is not in the model repository
        ├── VersionNotServed        404  the predictor answered 404 for the requested model version
        ├── VersionUnusable         503  the requested version is published but this transformer cannot
        │                                use it (digest mismatch, metadata that does not fit)
        ├── UnsupportedMediaType    415  the body is not JSON
        ├── UnsupportedProtocol     400  V2 infer on the transformer (it takes V1 raw transactions)
        ├── ModelNotLoaded          503  no model metadata yet (nothing published)
        ├── FeaturesUnavailable     503  the feature server is down, slow or answered garbage
        ├── PredictorUnavailable    503  the predictor is down or slow
        ├── PredictorBadResponse    502  the predictor answered with an error or an unusable body
        └── InternalFailure         500  an exception outside this family (a bug), logged with its traceback

Every class is a flywheel_contracts.errors error too (`TransformerError` its `FlywheelError`, each request
error also the standard class of its status, e.g. `VersionNotServed` a `NotFound`), which gives the status
and the `code`. A body is that module's shape plus this service's finer `type`, which clients already read:
`{"error": "<what to do>", "code": "not_found", "type": "version_not_served", ...}`; `code` is shared by every
service, `type` names the transformer case (both "unauthorized" on a 401).

Messages say what to do. This module imports no framework: the server turns `error_body` into JSON.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flywheel_contracts import errors as family


class TransformerError(family.FlywheelError):
    """Root of every error the transformer raises on purpose."""


class ConfigError(TransformerError):
    """A setting has a bad value; the message names the environment variable."""


class ModelMetadataError(TransformerError):
    """The model version's metadata cannot be used by this transformer (wrong columns, no defaults...)."""


class RequestError(TransformerError):
    """An error that ends one request; `kind` is a stable machine-readable name."""

    kind = "request_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class InvalidRequest(family.BadRequest, RequestError):
    """The request body is not what the V1 predict contract asks for."""

    kind = "invalid_request"

    def __init__(self, message: str, field: str | None = None, index: int | None = None) -> None:
        where = f"instances[{index}]" if index is not None else "request"
        full = f"{where}.{field}: {message}" if field else f"{where}: {message}"
        super().__init__(full)
        self.reason = message
        self.field = field
        self.index = index
        self.problems: list[dict[str, Any]] = []
        """Every problem found in the request (this error is the first), when there are several."""

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.field is not None:
            out["field"] = self.field
        if self.index is not None:
            out["index"] = self.index
        if len(self.problems) > 1:
            out["problems"] = self.problems
        return out


class TooManyInstances(family.PayloadTooLarge, InvalidRequest):
    kind = "too_many_instances"


class ImpossibleValue(family.Unprocessable, InvalidRequest):
    """A transaction that parses but cannot be a real card authorization (the domain policy in _policy)."""

    kind = "impossible_value"


class MethodNotAllowed(family.MethodNotAllowed, RequestError):
    """A served path asked with another method; `allow` lists the ones it takes (the `Allow` header)."""

    kind = "method_not_allowed"

    def __init__(self, message: str, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow
        self.headers = {"Allow": ", ".join(allow)}

    def details(self) -> dict[str, Any]:
        return {"allow": self.allow}


class BodyTooLarge(family.PayloadTooLarge, RequestError):
    """The request body is larger than the configured limit; `limit_bytes` names it."""

    kind = "body_too_large"

    def __init__(self, message: str, limit_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes

    def details(self) -> dict[str, Any]:
        return {"limit_bytes": self.limit_bytes}


class Unauthorized(family.Unauthorized, RequestError):
    """A request asked for something that needs a credential it did not send (answered with WWW-Authenticate)."""

    kind = "unauthorized"



class UnsupportedMediaType(family.UnsupportedMediaType, RequestError):
    kind = "unsupported_media_type"


class UnsupportedProtocol(family.BadRequest, RequestError):
    kind = "unsupported_protocol"


class InvalidHeader(family.BadRequest, RequestError):
    """A request header has a value this service does not accept; `header` names it."""

    kind = "invalid_header"

    def __init__(self, message: str, header: str) -> None:
        super().__init__(f"header {header}: {message}")
        self.header = header

    def details(self) -> dict[str, Any]:
        return {"header": self.header}


class VersionError(RequestError):
    """A request for one model version that cannot be served; `version` names it."""

    def __init__(self, message: str, version: str, published: list[str] | None = None) -> None:
        super().__init__(message)
        self.version = version
        self.published = published

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version}
        if self.published is not None:
            out["published"] = self.published
        return out


class VersionNotPublished(family.NotFound, VersionError):
    kind = "version_not_published"


class VersionNotServed(family.NotFound, VersionError):
    kind = "version_not_served"


class VersionUnusable(family.Unavailable, VersionError):
    kind = "version_unusable"


class VersionRouteNotServed(family.NotFound, RequestError):
    """KServe's versioned V2 routes (`/v2/models/<m>/versions/<v>[/ready|/infer]`), which KServe itself answers
    501 "not supported yet": here a 404 that says how to name a version."""

    kind = "version_route_not_served"


class ModelNotLoaded(family.Unavailable, RequestError):
    kind = "model_not_loaded"


class FeaturesUnavailable(family.Unavailable, RequestError):
    """The online feature lookup failed; `reason` is one of a few bounded values for metrics."""

    kind = "features_unavailable"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PredictorUnavailable(family.Unavailable, RequestError):
    kind = "predictor_unavailable"


class PredictorBadResponse(family.UpstreamFailed, RequestError):
    kind = "predictor_bad_response"


class InternalFailure(family.InternalError, RequestError):
    """An exception outside this family escaped a request (a bug); its traceback is logged, never sent."""

    kind = "internal"

    def __init__(self) -> None:
        super().__init__(family.INTERNAL_BODY["error"])


def status_of(error: BaseException) -> HTTPStatus:
    """The HTTP status of an error: its class's, from flywheel_contracts.errors (500 outside the family)."""
    return HTTPStatus(family.status_of(error))


def error_body(error: BaseException) -> dict[str, Any]:
    """The JSON body of an error response: flywheel_contracts.errors' body (KServe's `error` key, the shared
    `code`) plus the transformer's `type` and where it happened."""
    body = family.error_body(error)
    if isinstance(error, RequestError):
        body["type"] = error.kind
    return body
