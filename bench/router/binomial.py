"""The binomial 99% interval that bench/router checks observed traffic shares against (stdlib only)."""

from __future__ import annotations

import math


def interval(n: int, p: float, level: float = 0.99) -> tuple[int, int]:
    """(lo, hi): the central `level` acceptance region of Binomial(n, p), exact (each tail <= (1-level)/2)."""
    if p <= 0:
        return 0, 0
    if p >= 1:
        return n, n
    tail = (1 - level) / 2
    log_p, log_q = math.log(p), math.log1p(-p)
    lgn = math.lgamma(n + 1)
    cumulative, lo, hi = 0.0, None, n
    for k in range(n + 1):
        cumulative += math.exp(lgn - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q)
        if lo is None and cumulative > tail:
            lo = k  # P(X < lo) <= tail
        if cumulative >= 1 - tail:
            hi = k  # P(X > hi) <= tail
            break
    return lo or 0, hi


def check(observed: int, n: int, percent: float) -> dict:
    """An observed count of `n` draws against a weight in percent: share, interval, and whether it is inside."""
    lo, hi = interval(n, percent / 100)
    return {
        "weight_percent": percent,
        "n": n,
        "observed": observed,
        "share_percent": round(100 * observed / n, 3),
        "interval_99_percent": [round(100 * lo / n, 3), round(100 * hi / n, 3)],
        "within_99": lo <= observed <= hi,
    }
