"""The predictor's exception family and the one table that maps it to HTTP statuses.

    PredictorError
    ├── ConfigError          a setting is invalid (start-up only)
    ├── ModelLoadError       the model cannot be served: missing, tampered, or not what metadata says (start-up)
    ├── InvalidRequest       400: the body is not a valid request for this model
    ├── VersionNotServed     404: a version other than the one this server hosts was asked for
    ├── MethodNotAllowed     405: an inference route was called with something other than POST
    ├── PayloadTooLarge      413: the body is larger than FLYWHEEL_PREDICTOR_MAX_BODY_BYTES
    ├── UnsupportedMediaType 415: the content type is not JSON
    └── InferenceFailed      500: ONNX Runtime failed on a request that passed validation

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
    """The request names a model version this server does not host."""


class MethodNotAllowed(PredictorError):
    """An inference route was called with a method other than POST."""


class PayloadTooLarge(PredictorError):
    """The request body exceeds the configured limit."""


class UnsupportedMediaType(PredictorError):
    """The request's content type is not JSON."""


class InferenceFailed(PredictorError):
    """ONNX Runtime raised on a validated request."""


STATUS: dict[type[PredictorError], HTTPStatus] = {
    InvalidRequest: HTTPStatus.BAD_REQUEST,
    VersionNotServed: HTTPStatus.NOT_FOUND,
    MethodNotAllowed: HTTPStatus.METHOD_NOT_ALLOWED,
    PayloadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    InferenceFailed: HTTPStatus.INTERNAL_SERVER_ERROR,
}


def status_of(error: PredictorError) -> int:
    """The HTTP status for an error (500 for anything not in the table)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return int(STATUS[cls])
    return int(HTTPStatus.INTERNAL_SERVER_ERROR)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
