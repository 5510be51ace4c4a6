"""The routes in force: an immutable snapshot swapped in one assignment, so no request sees half a change.

A route is compiled once when it arrives (thresholds, header names as the lower-case bytes ASGI carries,
the hashing salt), never per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from flywheel_contracts import Route

from ._split import threshold


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: Route
    weight_threshold: int
    shadow_threshold: int
    preview_header: bytes | None
    sticky_header: bytes | None
    sticky_cookie: bytes | None
    salt: bytes

    @classmethod
    def of(cls, route: Route) -> CompiledRoute:
        sticky = route.stickiness
        candidate = route.candidate.version if route.candidate else ""
        return cls(
            route=route,
            weight_threshold=threshold(route.weight_steps),
            shadow_threshold=threshold(route.shadow_steps),
            preview_header=route.preview_header.lower().encode() if route.preview_header else None,
            sticky_header=sticky.header.lower().encode() if sticky and sticky.header else None,
            sticky_cookie=sticky.cookie.encode() if sticky and sticky.cookie else None,
            salt=f"{route.model}/{candidate}".encode(),
        )

    @property
    def needs_headers(self) -> bool:
        """True when routing reads request headers (preview or sticky)."""
        return bool(self.preview_header or self.sticky_header or self.sticky_cookie)


class RouteTable:
    """Every model's compiled route. `routes` is replaced whole; readers take one reference per request."""

    def __init__(self) -> None:
        self.routes: Mapping[str, CompiledRoute] = MappingProxyType({})
        self.loaded = False

    def replace(self, routes: Mapping[str, Route]) -> None:
        compiled = {model: CompiledRoute.of(route) for model, route in routes.items()}
        self.routes = MappingProxyType(compiled)
        self.loaded = True

    def get(self, model: str) -> CompiledRoute | None:
        return self.routes.get(model)
