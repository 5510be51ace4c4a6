"""From the router's cumulative per-replica figures to one interval's Observation of one metric.

The router serves counters that only grow since each replica started (flywheel_contracts.RouterStats). The
router provider keeps the previous read of every replica; `window` turns two reads into the interval's growth,
summed over replicas, and `observe` maps a metric name (error_rate, latency_p99_seconds, ...) onto counts or
histograms for the analysis. Both are pure, so the restarts, new replicas and shadow resets that make deltas
tricky are tested here without a router.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel

from flywheel_contracts import Histogram, MetricSpec, RouterStats, ShadowStats, VersionStats

from ._types import Counts, Observation, RouterWindow

_LATENCY = re.compile(r"latency_p(?P<nn>[5-9][0-9]|999)_seconds")

ROUTER_METRICS: frozenset[str] = frozenset(
    {"error_rate", "decline_rate", "shadow_mismatch_rate", "shadow_error_rate", "latency_p999_seconds"}
    | {f"latency_p{nn}_seconds" for nn in range(50, 100)}
)
_KNOWN = (
    "error_rate, decline_rate, shadow_mismatch_rate, shadow_error_rate, latency_pNN_seconds (NN 50..99) "
    "and latency_p999_seconds"
)
NO_WINDOW = "no router statistics for this interval"

_M = TypeVar("_M", bound=BaseModel)


# -------------------------------------------------------------------------------------------- window


def _plus(a: Histogram, b: Histogram) -> Histogram:
    if a.le != b.le:
        raise ValueError("histograms with different buckets cannot be added")
    return Histogram(
        le=a.le,
        counts=[x + y for x, y in zip(a.counts, b.counts, strict=True)],
        sum=a.sum + b.sum,
        count=a.count + b.count,
    )


def _combine(a: _M, b: _M, *, subtract: bool) -> _M:
    """Field by field: integers and histograms added (or b subtracted); labels (role, version) kept from a."""
    update: dict[str, object] = {}
    for name in type(a).model_fields:
        first, second = getattr(a, name), getattr(b, name)
        if isinstance(first, Histogram):
            update[name] = first.minus(second) if subtract else _plus(first, second)
        elif isinstance(first, int) and not isinstance(first, bool):
            update[name] = first - second if subtract else first + second
        # anything else (role, candidate_version) is a label: a's
    return a.model_copy(update=update)


def _went_down(delta: BaseModel) -> bool:
    for name in type(delta).model_fields:
        value = getattr(delta, name)
        if isinstance(value, Histogram) and (value.count < 0 or any(c < 0 for c in value.counts)):
            return True
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            return True
    return False


def _growth(after: _M, before: _M | None) -> _M:
    """after - before; all of `after` when there is no before or a counter went down (the router dropped the
    version's counters and began them again after `before` was read, so all of them are inside the interval)."""
    if before is None:
        return after
    delta = _combine(after, before, subtract=True)
    return after if _went_down(delta) else delta


def _add(total: _M | None, part: _M) -> _M:
    return part if total is None else _combine(total, part, subtract=False)


def window(
    before: dict[str, RouterStats],
    after: dict[str, RouterStats],
    *,
    since: datetime,
    candidate: str | None,
    stable: str | None,
    seconds: float,
) -> RouterWindow:
    """The interval's growth of the router's figures for one model, summed over replicas.

    before/after: replica name -> that replica's cumulative RouterStats. A replica read before with the same
    startedAt contributes after - before; one absent before, or restarted (another startedAt), contributes all
    of `after` when it started at or after `since` (it began inside the interval), and nothing otherwise (its
    counters hold traffic from before the interval that cannot be told apart). A replica whose histogram
    buckets differ from the others' (a router upgrade half rolled out) is left out rather than mis-added.
    """
    cand: VersionStats | None = None
    stab: VersionStats | None = None
    shadow: ShadowStats | None = None
    replicas = 0
    for name, now in after.items():
        then = before.get(name)
        if then is not None and then.started_at != now.started_at:
            then = None
            if now.started_at < since:
                continue
        elif then is None and now.started_at < since:
            continue
        try:
            parts = [
                None
                if version is None or version not in now.versions
                else _growth(now.versions[version], None if then is None else then.versions.get(version))
                for version in (candidate, stable)
            ]
            shadow_part = _shadow_growth(now, then, candidate)
            sums = (_maybe_add(cand, parts[0]), _maybe_add(stab, parts[1]), _maybe_add(shadow, shadow_part))
        except ValueError:
            continue  # buckets that cannot be subtracted or added: leave this replica out
        cand, stab, shadow = sums
        replicas += 1
    return RouterWindow(
        candidate=cand if cand is not None and cand.requests > 0 else None,
        stable=stab if stab is not None and stab.requests > 0 else None,
        shadow=shadow if shadow is not None and _any_traffic(shadow) else None,
        replicas=replicas,
        seconds=seconds,
    )


def _maybe_add(total: _M | None, part: _M | None) -> _M | None:
    return total if part is None else _add(total, part)


def _shadow_growth(now: RouterStats, then: RouterStats | None, candidate: str | None) -> ShadowStats | None:
    """The candidate's shadow figures for the interval. The router begins them again whenever the route names
    another candidate (with the replica's startedAt unchanged), so a baseline for another candidate is none."""
    if candidate is None or now.shadow.candidate_version != candidate:
        return None
    earlier = then.shadow if then is not None and then.shadow.candidate_version == candidate else None
    return _growth(now.shadow, earlier)


def _any_traffic(shadow: ShadowStats) -> bool:
    return any((shadow.mirrored, shadow.dropped, shadow.skipped, shadow.compared))


# ------------------------------------------------------------------------------------------- observe


def _error(metric: MetricSpec, message: str) -> Observation:
    return Observation(name=metric.name, kind="proportion", error=message)


def _counts(n: int, x: int) -> Counts | None:
    return Counts(n=n, x=x) if n > 0 else None


def observe(metric: MetricSpec, window: RouterWindow | None, *, shadow: bool) -> Observation:
    """One router metric over one interval. shadow: a Shadow rollout, where the candidate answers only
    mirrored requests (its figures are in `window.shadow`, not among the versions). Never raises: a metric
    that cannot be measured comes back with `error` set."""
    name = metric.metric or ""
    if window is None:
        return _error(metric, NO_WINDOW)
    if name not in ROUTER_METRICS:
        return _error(metric, f"unknown router metric {name!r}: the router measures {_KNOWN}")
    cand, stab, mirror = window.candidate, window.stable, window.shadow
    if name.startswith("shadow_") and not shadow:
        return _error(metric, f"{name} is measured only in a Shadow rollout (the candidate answers mirrored requests)")
    if name == "shadow_mismatch_rate" and metric.relative_to_stable:
        return _error(metric, "shadow_mismatch_rate already compares with the stable: drop relativeToStable")
    stable_errors = _counts(stab.requests, stab.errors) if stab else None

    if name == "error_rate" or name == "shadow_error_rate":
        if shadow:
            candidate = _counts(mirror.compared, mirror.candidate_errors) if mirror else None
        else:
            candidate = _counts(cand.requests, cand.errors) if cand else None
        return _proportion(metric, candidate, stable_errors)
    if name == "decline_rate":
        if shadow:
            return _error(metric, "decline_rate is not measured in a Shadow rollout: use shadow_mismatch_rate")
        return _proportion(
            metric,
            _counts(cand.predictions, cand.declines) if cand else None,
            _counts(stab.predictions, stab.declines) if stab else None,
        )
    if name == "shadow_mismatch_rate":
        return _proportion(
            metric, _counts(mirror.predictions_compared, mirror.decision_mismatches) if mirror else None, None
        )
    match = _LATENCY.fullmatch(name)
    assert match is not None  # every other name in ROUTER_METRICS is a latency quantile
    nn = match["nn"]
    histogram = (
        (mirror.candidate_latency_seconds if mirror else None) if shadow else (cand.latency_seconds if cand else None)
    )
    stable_histogram = stab.latency_seconds if stab and stab.latency_seconds.count > 0 else None
    return Observation(
        name=metric.name,
        kind="quantile",
        candidate_histogram=histogram,
        stable_histogram=stable_histogram,
        quantile=0.999 if nn == "999" else int(nn) / 100,
        samples=histogram.count if histogram else 0,
    )


def _proportion(metric: MetricSpec, candidate: Counts | None, stable: Counts | None) -> Observation:
    return Observation(
        name=metric.name, kind="proportion", candidate=candidate, stable=stable, samples=candidate.n if candidate else 0
    )
