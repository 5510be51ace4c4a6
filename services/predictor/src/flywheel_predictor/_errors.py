"""The predictor's exception family and the one table that maps it to HTTP statuses.

    PredictorError
    ├── ConfigError          a setting is invalid (start-up only)
    ├── ModelLoadError       the model cannot be served: missing, tampered, or not what metadata says (start-up)
    ├── InvalidRequest       400: the body is not a valid request for this model
    ├── ModelNotServed       404: a versioned route names a model other than the one served
    ├── VersionNotServed     404: the request names a version of the model that is not published
    ├── MethodNotAllowed     405: an inference route was called with something other than POST
    ├── PayloadTooLarge      413: the body is larger than FLYWHEEL_PREDICTOR_MAX_BODY_BYTES
    ├── UnsupportedMediaType 415: the content type is not JSON
    ├── InferenceFailed      500: ONNX Runtime failed on a request that passed validation
    └── VersionUnavailable   503: a published version cannot be served now (its load failed, or the
                             loaded-version limit is taken by pinned versions)

Every class is a flywheel_contracts.errors error too (`PredictorError` its `FlywheelError`, each request error
also the standard class of its status), which gives the status and the `code`. Error bodies are that module's
`{"error": "<message>", "code": "<code>"}`: the Open Inference Protocol's `error` (KServe's client reports it,
given the plain `application/json` content type it looks for) plus the code shared by every Flywheel service.
An exception outside the family is a bug: 500 with a generic message, the traceback logged once.
"""

from __future__ import annotations

import orjson

from flywheel_contracts import errors as family


class PredictorError(family.FlywheelError):
    """Base of every predictor error; the message says what was wrong and what to do."""


class ConfigError(PredictorError):
    """A FLYWHEEL_PREDICTOR_* setting has a bad value."""


class ModelLoadError(PredictorError):
    """The configured model version cannot be served; the server refuses to start."""


class InvalidRequest(family.BadRequest, PredictorError):
    """The request body is not a valid inference request for the hosted model."""


class ModelNotServed(family.NotFound, PredictorError):
    """A versioned route names a model this server does not serve (unversioned ones get KServe's 404)."""


class VersionNotServed(family.NotFound, PredictorError):
    """The request names a model version that is not published in the model repository."""


class MethodNotAllowed(family.MethodNotAllowed, PredictorError):
    """An inference route was called with a method other than POST."""


class PayloadTooLarge(family.PayloadTooLarge, PredictorError):
    """The request body exceeds the configured limit."""


class UnsupportedMediaType(family.UnsupportedMediaType, PredictorError):
    """The request's content type is not JSON."""


class InferenceFailed(family.InternalError, PredictorError):
    """ONNX Runtime raised on a validated request."""


class VersionUnavailable(family.Unavailable, PredictorError):
    """A published version cannot be served now: its load failed (remembered for LOAD_RETRY_S) or
    MAX_LOADED_VERSIONS is taken by versions that may not be unloaded."""


def status_of(error: BaseException) -> int:
    """The HTTP status of an error: its class's, from flywheel_contracts.errors (500 outside the family)."""
    return family.status_of(error)


def error_body(error: BaseException) -> bytes:
    """The JSON body of an error answer (a generic one for an exception outside the family)."""
    return orjson.dumps(family.error_body(error))


def message_body(message: str, status: int) -> bytes:
    """The body of an error this service did not raise (KServe's, Starlette's 404 and 405), in the same shape."""
    return orjson.dumps({"error": message, "code": family.code_of_status(status)})
