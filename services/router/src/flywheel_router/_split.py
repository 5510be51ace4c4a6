"""Which version answers a request: preview header, sticky hashing or a weighted draw; and whether to shadow.

Pure functions over a compiled route (`_table.CompiledRoute`) and the few request facts routing needs
(the preview header, the sticky key). The order, first match wins:

1. a pinned version (the versioned V2 path, or x-flywheel-model-version sent by the caller) answers;
2. the preview header, when the route has one and the request carries it non-empty -> candidate;
3. with stickiness, the key's point on a hash ring of 10,000 x 2^48 positions: candidate iff the point is
   below the weight's threshold. The threshold only grows with the weight, so a key that reached the
   candidate stays there as the weight rises (monotone), and the split is exact to 0.01%. A request
   without the key is drawn at random, as with no stickiness;
4. otherwise a uniform random draw against the same threshold.

Shadow: a request the stable answers is also mirrored to the candidate with probability shadowPercent.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from flywheel_contracts import WEIGHT_RESOLUTION, Backend, Route

POINTS = 1 << 64
"""Positions on the ring (a 64-bit hash); thresholds are POINTS * steps / (100 * WEIGHT_RESOLUTION)."""
FULL = 100 * WEIGHT_RESOLUTION


def threshold(steps: int) -> int:
    """The ring position below which a point goes to the candidate, for a weight in steps of 0.01%."""
    return POINTS * steps // FULL


def ring_point(key: bytes, salt: bytes) -> int:
    """A key's stable position on the ring: blake2b of salt + key (salt = model and candidate version, so
    each rollout orders keys afresh while keys stay put within it)."""
    return int.from_bytes(hashlib.blake2b(salt + b"\x00" + key, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route ready for `choose`: thresholds, header names as the lower-case bytes ASGI carries, the salt."""

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


@dataclass(frozen=True, slots=True)
class Choice:
    """Where one request goes."""

    backend: Backend
    role: str  # "stable" | "candidate" | "pinned"
    shadow: Backend | None = None


def choose(route: CompiledRoute, preview: bytes | None, sticky_key: bytes | None, rng: random.Random) -> Choice:
    """The version that answers (and the shadow, if any) for a request with these facts."""
    candidate = route.route.candidate
    if candidate is not None:
        if preview:
            return Choice(candidate, "candidate")
        if route.weight_threshold:
            point = ring_point(sticky_key, route.salt) if sticky_key else rng.getrandbits(64)
            if point < route.weight_threshold:
                return Choice(candidate, "candidate")
        if route.shadow_threshold and rng.getrandbits(64) < route.shadow_threshold:
            return Choice(route.route.stable, "stable", candidate)
    return Choice(route.route.stable, "stable")


def pinned(route: CompiledRoute | None, version: str) -> Choice:
    """A request that names its version: that version's backend in the route, else the default upstream."""
    if route is not None:
        for backend in (route.route.stable, route.route.candidate):
            if backend is not None and backend.version == version:
                return Choice(backend, "pinned")
    return Choice(Backend(version=version), "pinned")
