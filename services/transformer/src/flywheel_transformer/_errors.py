"""The transformer's one exception family and the single table that maps it to HTTP statuses.

    TransformerError
    ├── ConfigError             a setting is invalid (start-up, never HTTP)
    ├── ModelMetadataError      the published metadata does not fit this transformer (start-up)
    └── RequestError            anything that ends one request; `status_of` gives its HTTP status
        ├── InvalidRequest          400  a field is missing or mistyped (names field and instance)
        │   └── TooManyInstances    413  more transactions than FLYWHEEL_TRANSFORMER_MAX_INSTANCES
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
        └── PredictorBadResponse    502  the predictor answered with an error or an unusable body

Messages say what to do. This module imports no framework: the server turns `error_body` into JSON.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class TransformerError(Exception):
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
        self.message = message

    def details(self) -> dict[str, Any]:
        return {}


class InvalidRequest(RequestError):
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


class TooManyInstances(InvalidRequest):
    kind = "too_many_instances"


class BodyTooLarge(RequestError):
    """The request body is larger than the configured limit; `limit_bytes` names it."""

    kind = "body_too_large"

    def __init__(self, message: str, limit_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes

    def details(self) -> dict[str, Any]:
        return {"limit_bytes": self.limit_bytes}


class Unauthorized(RequestError):
    """A request asked for something that needs a credential it did not send (answered with WWW-Authenticate)."""

    kind = "unauthorized"

    def details(self) -> dict[str, Any]:
        return {"code": "unauthorized"}  # flywheel_contracts.auth's 401 body carries it too


class UnsupportedMediaType(RequestError):
    kind = "unsupported_media_type"


class UnsupportedProtocol(RequestError):
    kind = "unsupported_protocol"


class InvalidHeader(RequestError):
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


class VersionNotPublished(VersionError):
    kind = "version_not_published"


class VersionNotServed(VersionError):
    kind = "version_not_served"


class VersionUnusable(VersionError):
    kind = "version_unusable"


class ModelNotLoaded(RequestError):
    kind = "model_not_loaded"


class FeaturesUnavailable(RequestError):
    """The online feature lookup failed; `reason` is one of a few bounded values for metrics."""

    kind = "features_unavailable"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PredictorUnavailable(RequestError):
    kind = "predictor_unavailable"


class PredictorBadResponse(RequestError):
    kind = "predictor_bad_response"


STATUS: dict[type[RequestError], HTTPStatus] = {
    InvalidRequest: HTTPStatus.BAD_REQUEST,
    TooManyInstances: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    BodyTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    Unauthorized: HTTPStatus.UNAUTHORIZED,
    UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    UnsupportedProtocol: HTTPStatus.BAD_REQUEST,
    InvalidHeader: HTTPStatus.BAD_REQUEST,
    VersionNotPublished: HTTPStatus.NOT_FOUND,
    VersionNotServed: HTTPStatus.NOT_FOUND,
    VersionUnusable: HTTPStatus.SERVICE_UNAVAILABLE,
    ModelNotLoaded: HTTPStatus.SERVICE_UNAVAILABLE,
    FeaturesUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
    PredictorUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
    PredictorBadResponse: HTTPStatus.BAD_GATEWAY,
}
"""The one place a RequestError becomes an HTTP status (the most specific class wins)."""


def status_of(error: RequestError) -> HTTPStatus:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return HTTPStatus.BAD_GATEWAY  # an unmapped RequestError is still an upstream problem, never a 500


def error_body(error: RequestError) -> dict[str, Any]:
    """The JSON body of an error response: KServe's `error` key plus the kind and where it happened."""
    return {"error": error.message, "type": error.kind, **error.details()}
