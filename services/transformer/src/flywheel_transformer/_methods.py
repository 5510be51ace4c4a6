"""405 for a served path asked with a method it does not take, decided before routing, with `Allow`.

Starlette answers 405 only when no route matches the path and method together, and KServe's GET
`/v1/models/{model_name}` (model metadata) matches any path under `/v1/models/`: `GET
/v1/models/fraud:predict` reached it with the model name "fraud:predict" and was answered 404 "Model with
name fraud:predict does not exist". This pure-ASGI layer looks at every route whose pattern matches the
path, keeps the most specific ones (the most literal characters in the template: `{model_name}:predict`
beats `{model_name}`), and answers a method none of them takes with 405, an `Allow` header listing what
they take and the JSON error body. A path no route matches is left to the app (its JSON 404).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ._errors import MethodNotAllowed, error_body, status_of

# ASGI's types (a scope and messages are mutable mappings), without importing a web framework.
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PARAM = re.compile(r"{[^}]*}")


@dataclass(frozen=True)
class _Route:
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str]

    @property
    def specificity(self) -> int:
        return len(_PARAM.sub("", self.template))


def allowed_methods(routes: list[Any], path: str) -> list[str] | None:
    """The methods the most specific routes matching `path` take, sorted; None when no route matches.

    `routes` are Starlette routes (`path`, `path_regex`, `methods`); routes without methods are skipped."""
    candidates = [
        _Route(route.path, route.path_regex, frozenset(route.methods))
        for route in routes
        if getattr(route, "methods", None) and getattr(route, "path_regex", None) is not None
    ]
    matching = [route for route in candidates if route.pattern.match(path)]
    if not matching:
        return None
    best = max(route.specificity for route in matching)
    return sorted(set().union(*(route.methods for route in matching if route.specificity == best)))


class MethodCheck:
    """ASGI middleware: a wrong method on a served path gets a JSON 405 with `Allow`, never reaching `app`.

    `routes`: the app's routes as registered (`_kserve_adapter.served_routes`)."""

    def __init__(self, app: ASGIApp, routes: list[Any]) -> None:
        self.app = app
        self.routes = routes
        self._cache: dict[str, list[str] | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        allow = self._allowed(path)
        if allow is None or method in allow:
            return await self.app(scope, receive, send)
        error = MethodNotAllowed(f"{method} {path} is not served: this path takes {', '.join(allow)}", allow)
        body = json.dumps(error_body(error)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"allow", ", ".join(allow).encode()),
        ]
        await send({"type": "http.response.start", "status": int(status_of(error)), "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, path: str) -> list[str] | None:
        if path in self._cache:
            return self._cache[path]
        allow = allowed_methods(self.routes, path)
        if len(self._cache) < 1024:  # paths are attacker-chosen: the cache stays bounded
            self._cache[path] = allow
        return allow
