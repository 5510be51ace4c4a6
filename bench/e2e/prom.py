"""Per-stage latency from the services' own Prometheus histograms: scrape before and after a step, subtract.

Standard library only. A histogram series is (name, labels without `le`); its delta over a step gives the
calls made in the step, their mean (sum / count) and an approximate p99 interpolated inside the bucket it
falls in, as PromQL's histogram_quantile does (so it is only as fine as the service's buckets).
"""

from __future__ import annotations

import math
import re
import urllib.request
from collections import defaultdict

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Prometheus text exposition -> {(name, sorted labels): value}; comments and odd lines skipped."""
    samples: Samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        labels = tuple(sorted(_LABEL.findall(match.group(2) or "")))
        try:
            samples[(match.group(1), labels)] = float(match.group(3))
        except ValueError:
            continue
    return samples


def scrape(url: str, timeout_s: float = 5.0) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse(response.read().decode())


def gauge(samples: Samples, name: str) -> float:
    """The sum of every series of `name` (0 when absent)."""
    return sum(v for (n, _), v in samples.items() if n == name)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """histogram_quantile over cumulative (upper bound, count) pairs; the last finite bound if it is past them."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def histogram_deltas(before: Samples, after: Samples) -> list[dict]:
    """Every histogram series that counted something between the two scrapes: name, labels, count, mean, p99."""
    series: dict[tuple[str, tuple], dict] = defaultdict(lambda: {"buckets": {}, "sum": 0.0, "count": 0.0})
    for (name, labels), value in after.items():
        delta = value - before.get((name, labels), 0.0)
        if name.endswith("_bucket"):
            le = dict(labels).get("le")
            rest = tuple(kv for kv in labels if kv[0] != "le")
            if le is not None:
                series[(name[: -len("_bucket")], rest)]["buckets"][float(le)] = delta
        elif name.endswith("_sum"):
            series[(name[: -len("_sum")], labels)]["sum"] = delta
        elif name.endswith("_count"):
            series[(name[: -len("_count")], labels)]["count"] = delta
    rows = []
    for (name, labels), s in sorted(series.items()):
        if not s["buckets"] or s["count"] <= 0:
            continue
        buckets = sorted(s["buckets"].items())
        p99 = quantile(0.99, buckets)
        finite = [count for bound, count in buckets if not math.isinf(bound)]
        rows.append({
            "metric": name,
            "labels": dict(labels),
            "count": round(s["count"]),
            "mean_ms": round(1000 * s["sum"] / s["count"], 3),
            "p99_ms": None if p99 is None else round(1000 * p99, 3),
            # The p99 is past the last finite bucket: the figure is that bound, a floor.
            "p99_past_buckets": bool(finite) and finite[-1] < 0.99 * s["count"],
        })
    return rows


def counter_deltas(before: Samples, after: Samples, pattern: str) -> dict[str, float]:
    """Counters whose name matches `pattern` and moved: "name{labels}" -> delta."""
    wanted = re.compile(pattern)
    moved = {}
    for (name, labels), value in after.items():
        if name.endswith("_total") and wanted.search(name):
            delta = value - before.get((name, labels), 0.0)
            if delta:
                shown = ",".join(f"{k}={v}" for k, v in labels if k not in ("model",))
                moved[f"{name}{{{shown}}}"] = delta
    return moved
