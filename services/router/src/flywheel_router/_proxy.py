"""The inference port: KServe V1/V2 passed through to the version the route picks.

A pure ASGI app (no framework: every microsecond here is added to every inference). Per request it reads
only what routing needs (path, a few headers), forwards the body as bytes, and answers with the
upstream's status, headers and body, adding `x-flywheel-model-version` (the version that answered, when
the upstream did not say) and `x-flywheel-route` (stable | candidate | pinned | unrouted).

Paths:
- `POST /v1/models/{m}:predict`, `POST /v2/models/{m}/infer`: routed by the model's route.
- `POST /v2/models/{m}/versions/{v}/infer`, or any inference carrying `x-flywheel-model-version`: pinned.
- `GET /v1/models/{m}`, `GET /v2/models/{m}[/ready]`, `GET /v2/models/{m}/versions/{v}[/ready]`: to the
  stable (or the named version), no statistics.
- `GET /v2/health/live`, `/v2/health/ready` (ready = routes loaded), `/metrics`: answered here.

Faults: a candidate that refuses, resets, times out or answers 502/503/504 is retried once on the stable
(inference is idempotent) and counted as a candidate error; a stable that cannot answer gives 503 JSON.
A model without a route goes to the default upstream without a version (its default version answers).
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote

from flywheel_contracts import Backend, Route
from flywheel_contracts.body import Disconnected
from flywheel_contracts.routes import VERSION_PATTERN

from ._compare import EMPTY, Outcome, compare, read_outcome
from ._config import Settings
from ._errors import BadRequest, MethodNotAllowed, NotFound, RouterError, UpstreamUnavailable
from ._http import HOP_BY_HOP, Tracked, hop_by_hop, read_body, respond, respond_error, respond_json, respond_unexpected
from ._metrics import Metrics
from ._shadow import Copy, Shadow
from ._split import Choice, CompiledRoute, choose, pinned
from ._stats import ModelStats
from ._table import RouteTable
from ._upstream import Answer, UpstreamClient, UpstreamFailure

log = logging.getLogger("flywheel_router")


class FailureLog:
    """Upstream failures in the log with their detail (the URL) that callers never see: one line per
    target and kind per `every_s`, so an outage under load is a few lines, not one per request (the
    metrics count every failure)."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def note(self, target: str, failure: UpstreamFailure) -> None:
        key, now = (target, failure.kind), self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        log.warning("upstream %s: %s%s", target, failure, f" (and {more} more since the last line)" if more else "")


VERSION_HEADER = b"x-flywheel-model-version"
ROUTE_HEADER = b"x-flywheel-route"
REQUEST_ID = b"x-request-id"
_VERSION_RE = re.compile(VERSION_PATTERN)
_RETRY_STATUSES = frozenset({502, 503, 504})
_DROP_FORWARD = frozenset({b"host", b"content-length", VERSION_HEADER})
_DROP_BACK = frozenset({b"content-length", b"date", b"server"})
UNROUTED = "unrouted"
Scope = MutableMapping[str, Any]  # an ASGI scope


class InferenceApp:
    """ASGI app of the inference port."""

    def __init__(
        self,
        settings: Settings,
        table: RouteTable,
        upstreams: UpstreamClient,
        metrics: Metrics,
        shadow_workers: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.upstreams = upstreams
        self.metrics = metrics
        self.stats: dict[str, ModelStats] = {}
        self.rng = rng or random.Random()
        self.shadow = Shadow(
            upstreams,
            shadow_workers or settings.shadow_workers,
            settings.shadow_queue_size,
            settings.shadow_timeout_s,
            self._record_shadow,
        )
        self._labels: dict[tuple, tuple] = {}
        self._failures = FailureLog()

    # -- routes in force ---------------------------------------------------------------------------------
    def apply(self, routes: Mapping[str, Route]) -> None:
        """Swap in a whole route set (the route source calls this)."""
        self.table.replace(routes)
        for model, route in routes.items():
            stats = self.stats.get(model) or self.stats.setdefault(model, ModelStats(model))
            stats.set_route(route.stable.version, route.candidate.version if route.candidate else None)
            self.metrics.route_generation.labels(model).set(route.generation)
            self.metrics.candidate_weight.labels(model).set(route.candidate_weight)
        self.metrics.route_updates.inc()
        self._labels.clear()

    # -- ASGI --------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        send = Tracked(send)
        try:
            if path.startswith("/v1/models/"):
                name = path[len("/v1/models/") :]
                if name.endswith(":predict"):
                    return await self._infer(scope, receive, send, name[: -len(":predict")], None)
                return await self._metadata(scope, receive, send, name, None)
            if path.startswith("/v2/models/"):
                parts = path[len("/v2/models/") :].split("/")
                model = parts[0]
                if parts[1:] == ["infer"]:
                    return await self._infer(scope, receive, send, model, None)
                if len(parts) == 4 and parts[1] == "versions" and parts[3] == "infer":
                    return await self._infer(scope, receive, send, model, _version(parts[2], "path"))
                if parts[1:] in ([], ["ready"]):
                    return await self._metadata(scope, receive, send, model, None)
                if len(parts) in (3, 4) and parts[1] == "versions" and parts[3:] in ([], ["ready"]):
                    return await self._metadata(scope, receive, send, model, _version(parts[2], "path"))
            elif path == "/v2/health/live":
                _only(method, "GET", path)
                return await respond_json(send, 200, {"live": True})
            elif path == "/v2/health/ready":
                _only(method, "GET", path)
                ready = self.table.loaded
                return await respond_json(send, 200 if ready else 503, {"ready": ready})
            elif path == "/metrics":
                _only(method, "GET", path)
                accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), None)
                body, content_type = self.metrics.render(accept)
                return await respond(send, 200, body, [(b"content-type", content_type.encode())])
            raise NotFound(f"no route for {path}: the router serves KServe V1/V2 inference, health and /metrics")
        except RouterError as e:
            await respond_error(send, e)
        except Disconnected:
            return  # the client left mid-body: no one to answer, nothing to forward
        except Exception as e:
            await respond_unexpected(send, e, scope)

    # -- inference -----------------------------------------------------------------------------------------
    async def _infer(self, scope: Scope, receive: Callable, send: Callable, model: str, version: str | None) -> None:
        _only(scope["method"], "POST", scope["path"])
        headers = dict(scope["headers"])
        body = await read_body(
            receive, headers.get(b"content-length"), self.settings.max_body_bytes, "FLYWHEEL_ROUTER_MAX_BODY_BYTES"
        )
        asked = headers.get(VERSION_HEADER)
        if version is None and asked:
            version = _version(asked.decode("latin-1"), "header")
        route = self.table.get(model)
        if version is not None:
            choice = pinned(route, version)
        elif route is None:
            choice = None
        else:
            choice = choose(route, *_routing_facts(route, headers), self.rng)
        request_id = headers.get(REQUEST_ID) or os.urandom(16).hex().encode()
        forward = _forward_headers(headers, request_id)
        suffix = _wire_path(scope) + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")

        if choice is None:  # no route: the default upstream's default version
            answer = await self._send_stable(
                scope["method"], self.settings.default_upstream + suffix, forward, body, model
            )
            return await self._answer(send, answer, None, UNROUTED, request_id)
        stats = self.stats.get(model) if route is not None else None
        answered = await self._forward(scope["method"], suffix, forward, body, model, choice, stats)
        if answered is None:  # the candidate failed: once more on the stable
            assert route is not None  # only a route has a candidate
            self.metrics.retries.labels(model).inc()
            choice = Choice(route.route.stable, "stable")
            answered = await self._forward(scope["method"], suffix, forward, body, model, choice, stats, final=True)
            assert answered is not None  # final: an answer or UpstreamUnavailable
        answer, outcome = answered
        await self._answer(send, answer, choice.backend.version, choice.role, request_id)
        if choice.shadow is not None and answer.status == 200:
            self._mirror(model, choice.shadow, scope["method"], suffix, forward, body, outcome)

    async def _forward(
        self,
        method: str,
        suffix: str,
        headers: list,
        body: bytes,
        model: str,
        choice: Choice,
        stats: ModelStats | None,
        final: bool = False,
    ) -> tuple[Answer, Outcome] | None:
        """The chosen version's answer and what it said; None when it was the candidate and failed (the
        caller retries on the stable)."""
        backend = choice.backend
        retry_allowed = choice.role == "candidate" and not final
        counters = stats.counters(backend.version) if stats is not None else None
        label_version = stats.key(backend.version) if stats is not None else backend.version
        url = (backend.endpoint or self.settings.default_upstream) + suffix
        try:
            answer = await self.upstreams.send(
                method, url, [*headers, (VERSION_HEADER, backend.version.encode())], body
            )
        except UpstreamFailure as failure:
            if counters is not None:
                counters.requests += 1
                if failure.kind == "timeout":
                    counters.timeouts += 1
                else:
                    counters.connect_errors += 1
            self.metrics.upstream_failures.labels(model, label_version, failure.kind).inc()
            if retry_allowed:
                return None
            self._failures.note(f"{model} {backend.version}", failure)
            raise UpstreamUnavailable(
                f"model '{model}' version '{backend.version}' cannot answer: {failure.public}; retry later"
            ) from failure
        status = answer.status
        if retry_allowed and status in _RETRY_STATUSES:
            self._count(counters, model, label_version, choice.role, answer, EMPTY)
            return None
        outcome = (
            read_outcome(dict(answer.headers), answer.body, self.settings.decision_threshold)
            if status == 200
            else EMPTY
        )
        self._count(counters, model, label_version, choice.role, answer, outcome)
        return answer, outcome

    def _count(self, counters, model: str, version: str, role: str, answer: Answer, outcome: Outcome) -> None:
        status = answer.status
        code = f"{status // 100}xx"
        key = (model, version, role, code)
        cached = self._labels.get(key)
        if cached is None:
            m = self.metrics
            cached = self._labels[key] = (
                m.requests.labels(model, version, role, code),
                m.request_seconds.labels(model, version, role),
                m.predictions.labels(model, version),
                m.declines.labels(model, version),
            )
        requests, seconds, predictions, declines = cached
        requests.inc()
        seconds.observe(answer.seconds)
        if outcome.scores:
            predictions.inc(len(outcome.scores))
            declined = sum(outcome.declines)
            if declined:
                declines.inc(declined)
        if counters is None:
            return
        counters.requests += 1
        if status >= 500:
            counters.status_5xx += 1
        elif status >= 400:
            counters.status_4xx += 1
        counters.latency.observe(answer.seconds)
        if outcome.scores:
            counters.predictions += len(outcome.scores)
            counters.declines += sum(outcome.declines)
            for score in outcome.scores:
                counters.scores.observe(score)

    async def _send_stable(self, method: str, url: str, headers: list, body: bytes, model: str) -> Answer:
        try:
            answer = await self.upstreams.send(method, url, headers, body)
        except UpstreamFailure as failure:
            self.metrics.upstream_failures.labels(UNROUTED, "default", failure.kind).inc()
            self._failures.note(f"{model} (default upstream)", failure)
            raise UpstreamUnavailable(f"model '{model}' cannot answer: {failure.public}; retry later") from failure
        self.metrics.requests.labels(UNROUTED, "default", UNROUTED, f"{answer.status // 100}xx").inc()
        return answer

    async def _answer(self, send: Callable, answer: Answer, version: str | None, role: str, request_id: bytes) -> None:
        headers = [(k, v) for k, v in answer.headers if k not in _DROP_BACK and k not in HOP_BY_HOP]
        names = {k for k, _ in headers}
        if version is not None and VERSION_HEADER not in names:
            headers.append((VERSION_HEADER, version.encode()))
        if REQUEST_ID not in names:
            headers.append((REQUEST_ID, request_id))
        headers.append((ROUTE_HEADER, role.encode()))
        await respond(send, answer.status, answer.body, headers)

    # -- shadow ----------------------------------------------------------------------------------------------
    def _mirror(
        self, model: str, candidate: Backend, method: str, suffix: str, headers: list, body: bytes, stable: Outcome
    ) -> None:
        stats = self.stats.get(model)
        if not self.shadow.accepting(model, candidate.version):
            self.metrics.shadow_skipped.labels(model).inc()
            if stats is not None:
                stats.shadow.skipped += 1
            return
        url = (candidate.endpoint or self.settings.default_upstream) + suffix
        copy = Copy(
            model,
            candidate.version,
            method,
            url,
            [*headers, (VERSION_HEADER, candidate.version.encode()), (b"x-flywheel-shadow", b"1")],
            body,
            stable,
        )
        if self.shadow.submit(copy):
            self.metrics.shadow_mirrored.labels(model).inc()
            if stats is not None:
                stats.shadow.mirrored += 1
        else:
            self.metrics.shadow_dropped.labels(model).inc()
            if stats is not None:
                stats.shadow.dropped += 1
        self.metrics.shadow_queue.set(self.shadow.depth)

    def _record_shadow(self, copy: Copy, answer: Answer | None, failure: UpstreamFailure | None) -> None:
        stats = self.stats.get(copy.model)
        shadow = stats.shadow if stats is not None and stats.shadow.candidate_version == copy.version else None
        m = self.metrics
        if shadow is not None:
            shadow.compared += 1
        if answer is None or answer.status != 200:
            m.shadow_errors.labels(copy.model, copy.version).inc()
            if shadow is not None:
                shadow.candidate_errors += 1
            return
        if shadow is not None:
            shadow.candidate_latency.observe(answer.seconds)
        stable = copy.context
        assert isinstance(stable, Outcome)
        result = compare(stable, read_outcome(dict(answer.headers), answer.body, self.settings.decision_threshold))
        if result is None:
            return
        m.shadow_predictions.labels(copy.model, copy.version).inc(result.predictions)
        if result.mismatches:
            m.shadow_mismatches.labels(copy.model, copy.version).inc(result.mismatches)
        histogram = m.shadow_score_diff.labels(copy.model, copy.version)
        for diff in result.score_diffs:
            histogram.observe(diff)
        if shadow is not None:
            shadow.predictions_compared += result.predictions
            shadow.decision_mismatches += result.mismatches
            for diff in result.score_diffs:
                shadow.score_diff.observe(diff)

    # -- metadata ------------------------------------------------------------------------------------------
    async def _metadata(self, scope: Scope, receive: Callable, send: Callable, model: str, version: str | None) -> None:
        _only(scope["method"], "GET", scope["path"])
        headers = dict(scope["headers"])
        await read_body(
            receive, headers.get(b"content-length"), self.settings.max_body_bytes, "FLYWHEEL_ROUTER_MAX_BODY_BYTES"
        )
        route = self.table.get(model)
        if version is not None:
            backend = pinned(route, version).backend
        elif route is not None:
            backend = route.route.stable
        else:
            backend = None
        request_id = headers.get(REQUEST_ID) or os.urandom(16).hex().encode()
        forward = _forward_headers(headers, request_id)
        if backend is not None:
            forward.append((VERSION_HEADER, backend.version.encode()))
        base = backend.endpoint if backend is not None and backend.endpoint else self.settings.default_upstream
        try:
            answer = await self.upstreams.send("GET", base + _wire_path(scope), forward, b"")
        except UpstreamFailure as failure:
            self._failures.note(f"{model} metadata", failure)
            raise UpstreamUnavailable(
                f"model '{model}' metadata unavailable: {failure.public}; retry later"
            ) from failure
        role = "pinned" if version is not None else ("stable" if route is not None else UNROUTED)
        await self._answer(send, answer, backend.version if backend else None, role, request_id)


def _routing_facts(route: CompiledRoute, headers: dict[bytes, bytes]) -> tuple[bytes | None, bytes | None]:
    """(preview header value, sticky key) of a request: only what this route reads."""
    if not route.needs_headers:
        return None, None
    preview = headers.get(route.preview_header) if route.preview_header else None
    if route.sticky_header:
        key = headers.get(route.sticky_header)
    elif route.sticky_cookie:
        key = _cookie(headers.get(b"cookie"), route.sticky_cookie)
    else:
        key = None
    return (preview.strip() or None) if preview else None, key


def _cookie(header: bytes | None, name: bytes) -> bytes | None:
    if not header:
        return None
    for part in header.split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name:
            return value.strip(b'"') or None
    return None


def _forward_headers(headers: dict[bytes, bytes], request_id: bytes) -> list[tuple[bytes, bytes]]:
    drop = hop_by_hop(headers) | _DROP_FORWARD
    forward = [(k, v) for k, v in headers.items() if k not in drop]
    if REQUEST_ID not in headers:
        forward.append((REQUEST_ID, request_id))
    return forward


def _version(value: str, where: str) -> str:
    if len(value) > 63 or not _VERSION_RE.match(value):
        source = "the versioned path" if where == "path" else "header x-flywheel-model-version"
        raise BadRequest(f"{source} names version {value[:80]!r}; expected a version such as v2")
    return value


def _wire_path(scope: Scope) -> str:
    """The path as the caller sent it (percent-encoded, so ASCII), for the upstream: `scope["path"]` is decoded,
    and a model name outside latin-1 (`/v2/models/%F0%9F%98%80/infer`) could not be written on the wire (a 500)."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else quote(scope["path"], safe="/:@!$&'()*+,;=-._~")


def _only(method: str, allowed: str, path: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"{path} takes {allowed}, not {method}", (allowed,))


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
