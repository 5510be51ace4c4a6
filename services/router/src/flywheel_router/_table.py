"""The routes in force: an immutable snapshot swapped in one assignment, so no request sees half a change.

Each route is compiled (`_split.CompiledRoute`) once when it arrives, never per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from flywheel_contracts import Route

from ._split import CompiledRoute


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
