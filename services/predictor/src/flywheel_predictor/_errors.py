"""The predictor's exception family and the one table that maps it to HTTP statuses.

    PredictorError
    ├── ConfigError          a setting is invalid (start-up only)
    ├── ModelLoadError       the model cannot be served: missing, tampered, or not what metadata says (start-up)
    ├── InvalidRequest       400: the body is not a valid request for this model
    ├── VersionNotServed     404: the request names a version of the model that is not published
    ├── MethodNotAllowed     405: an inference route was called with something other than POST
    ├── PayloadTooLarge      413: the body is larger than FLYWHEEL_PREDICTOR_MAX_BODY_BYTES
    ├── UnsupportedMediaType 415: the content type is not JSON
    ├── InferenceFailed      500: ONNX Runtime failed on a request that passed validation
    └── VersionUnavailable   503: a published version cannot be served now (its load failed, or the
                             loaded-version limit is taken by pinned versions)

Error bodies are `{"error": "<message>"}`, the Open Inference Protocol's shape (and KServe's), with the
plain `application/json` content type KServe's client looks for when it reports the message.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson


class PredictorError(Exception):
    """Base of every predictor error; the message says what was wrong and what to do."""


class ConfigError(PredictorError):
    """A FLYWHEEL_PREDICTOR_* setting has a bad value."""


class ModelLoadError(PredictorError):
    """The configured model version cannot be served; the server refuses to start."""


class InvalidRequest(PredictorError):
    """The request body is not a valid inference request for the hosted model."""


class VersionNotServed(PredictorError):
    """The request names a model version that is not published in the model repository."""


class MethodNotAllowed(PredictorError):
    """An inference route was called with a method other than POST."""


class PayloadTooLarge(PredictorError):
    """The request body exceeds the configured limit."""


class UnsupportedMediaType(PredictorError):
    """The request's content type is not JSON."""


class InferenceFailed(PredictorError):
    """ONNX Runtime raised on a validated request."""


class VersionUnavailable(PredictorError):
    """A published version cannot be served now: its load failed (remembered for LOAD_RETRY_S) or
    MAX_LOADED_VERSIONS is taken by versions that may not be unloaded."""


STATUS: dict[type[PredictorError], HTTPStatus] = {
    InvalidRequest: HTTPStatus.BAD_REQUEST,
    VersionNotServed: HTTPStatus.NOT_FOUND,
    MethodNotAllowed: HTTPStatus.METHOD_NOT_ALLOWED,
    PayloadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    InferenceFailed: HTTPStatus.INTERNAL_SERVER_ERROR,
    VersionUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
}


def status_of(error: PredictorError) -> int:
    """The HTTP status for an error (500 for anything not in the table)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return int(STATUS[cls])
    return int(HTTPStatus.INTERNAL_SERVER_ERROR)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
