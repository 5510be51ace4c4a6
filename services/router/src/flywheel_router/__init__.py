"""Flywheel router: the stable entry point for inference, splitting each model's traffic between versions.

Run it with `python -m flywheel_router`; settings are FLYWHEEL_ROUTER_* variables (`Settings`). The route
contract is `flywheel_contracts.Route`; the admin API (`AdminApp`) reads and writes routes and serves
statistics; `InferenceApp` is the ASGI app of the inference port.
"""

from __future__ import annotations

from flywheel_contracts.auth import TokenFile

from ._admin import AdminApp
from ._config import Settings, load_settings
from ._errors import (
    BadRequest,
    ConfigError,
    Conflict,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestError,
    RouterError,
    RouteSourceError,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamUnavailable,
)
from ._proxy import InferenceApp
from ._sources import make_source
from ._split import Choice, CompiledRoute, choose, pinned, ring_point, threshold
from ._store import RouteSource
from ._table import RouteTable

__all__ = [
    "AdminApp",
    "BadRequest",
    "Choice",
    "CompiledRoute",
    "ConfigError",
    "Conflict",
    "InferenceApp",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RequestError",
    "RouteSource",
    "RouteSourceError",
    "RouteTable",
    "RouterError",
    "Settings",
    "TokenFile",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamUnavailable",
    "choose",
    "load_settings",
    "make_source",
    "pinned",
    "ring_point",
    "threshold",
]
