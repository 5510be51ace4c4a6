"""Decision quality of the controller's analysis: sequential evidence against the fixed per-interval rule.

    services/controller/.venv/bin/python bench/controller/decisions.py [--rollouts 500] [--seed 20261130]

Simulates canary rollouts (2000 requests a 1-minute interval, candidate weight 5% -> 25% -> 50%, five
intervals each) in which both versions draw from the same process except for the candidate's change, and runs
every rollout through `analyse()` twice on the SAME traffic: `evidence: Sequential` (always-valid p-values,
rolled back when a run is decisive) and `evidence: Interval` (the Argo Rollouts / Flagger rule: each interval's
value against the bound, rolled back after failureLimit failed intervals in a row). The traffic goes through
the router-metric mapping (`observe()` on a RouterWindow), so the figures exercise the controller's own code.
Writes the "decisions" key of bench/results/controller.json (other keys kept). See bench/controller/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "services" / "controller" / "src"))

from flywheel_contracts import AnalysisRun, AnalysisSpec, EvidenceState, Histogram, MetricSpec, VersionStats  # noqa: E402
from flywheel_controller._analysis import analyse  # noqa: E402
from flywheel_controller._router_metrics import observe  # noqa: E402
from flywheel_controller._types import RouterWindow  # noqa: E402


def _router_latency_buckets() -> tuple[float, ...]:
    """The router's own LATENCY_BUCKETS, from its module (its package imports a web stack this venv lacks)."""
    path = ROOT / "services" / "router" / "src" / "flywheel_router" / "_stats.py"
    spec = importlib.util.spec_from_file_location("_flywheel_router_stats", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return tuple(module.LATENCY_BUCKETS)


RESULTS = ROOT / "bench" / "results" / "controller.json"
REQUESTS = 2000  # per interval, both versions together
STEPS = ((5, 5), (25, 5), (50, 5))  # (candidate weight %, intervals at that weight)
ERROR_RATE = 0.01
DECLINE_RATE = 0.05
LATENCY_SIGMA = 0.5  # lognormal shape: p99 = 3.2 x median
STABLE_P99_RANGE = (
    0.05,
    0.25,
)  # per rollout, log-uniform, so p99 falls anywhere relative to the bucket edges
ROUTER_BUCKETS = _router_latency_buckets()  # x1.09 a bucket from 4 ms to 2.05 s, 78 buckets
COARSE_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)  # the router's before
QUARTER_BUCKETS = tuple(0.0005 * 2 ** (k / 4) for k in range(65))  # native schema 2: x1.19, 65 buckets
Z99 = 2.3263478740408408
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
METHODS = (
    ("sequential", "Sequential", 1),
    ("interval", "Interval", 1),
    ("interval_bound_x2", "Interval", 2),
    ("interval_bound_x3", "Interval", 3),
    ("interval_bound_x4", "Interval", 4),
)
"""(label, spec.analysis.evidence, factor on every metric's bound). The widened Interval rules show what the
fixed rule would need to reach the sequential test's false rollback rate, and what it then detects."""


def metric(name: str, router_metric: str, bound: float) -> MetricSpec:
    return MetricSpec(
        name=name,
        provider="router",
        metric=router_metric,
        max=bound,
        relative_to_stable=True,
    )


ERRORS = metric("error-rate", "error_rate", 0.005)
DECLINES = metric("decline-rate", "decline_rate", 0.01)
LATENCY = metric("latency-p99", "latency_p99_seconds", 0.005)  # 5 ms over the stable's p99


@dataclass(frozen=True)
class Scenario:
    name: str
    error_rate: float = ERROR_RATE
    decline_rate: float = DECLINE_RATE
    latency_factor: float = 1.0
    # spec label -> (metrics, histogram ladder the router would use)
    specs: dict[str, tuple[tuple[MetricSpec, ...], tuple[float, ...]]] = field(default_factory=dict)


SCENARIOS = (
    Scenario(
        "good",
        specs={
            "errors": ((ERRORS,), ROUTER_BUCKETS),
            "declines": ((DECLINES,), ROUTER_BUCKETS),
            "latency_router_buckets": ((LATENCY,), ROUTER_BUCKETS),
            "latency_coarse_buckets": ((LATENCY,), COARSE_BUCKETS),
            "latency_x1_19_buckets": ((LATENCY,), QUARTER_BUCKETS),
            "all_three_router_buckets": ((ERRORS, DECLINES, LATENCY), ROUTER_BUCKETS),
        },
    ),
    # the worst candidate the bounds still accept: the sequential guarantee (<= alpha) is for this edge too
    Scenario(
        "at_the_bound",
        error_rate=ERROR_RATE + ERRORS.max,
        decline_rate=DECLINE_RATE + DECLINES.max,
        specs={
            "errors": ((ERRORS,), ROUTER_BUCKETS),
            "declines": ((DECLINES,), ROUTER_BUCKETS),
        },
    ),
    Scenario(
        "errors_x3",
        error_rate=3 * ERROR_RATE,
        specs={"errors": ((ERRORS,), ROUTER_BUCKETS)},
    ),
    Scenario(
        "declines_plus_2_points",
        decline_rate=DECLINE_RATE + 0.02,
        specs={"declines": ((DECLINES,), ROUTER_BUCKETS)},
    ),
    Scenario(
        "latency_p99_plus_30pct",
        latency_factor=1.3,
        specs={
            "latency_router_buckets": ((LATENCY,), ROUTER_BUCKETS),
            "latency_coarse_buckets": ((LATENCY,), COARSE_BUCKETS),
            "latency_x1_19_buckets": ((LATENCY,), QUARTER_BUCKETS),
        },
    ),
)


# ------------------------------------------------------------------------------------------ sampling


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Binomial(n, p): exact (geometric gaps) when n*p is small, the normal approximation when it is large."""
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1 - p)
    if n * p > 200:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    log_q, successes, position = math.log1p(-p), 0, 0
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return successes
        successes += 1


def _lognormal_cdf(x: float, mu: float, sigma: float) -> float:
    return 0.5 * math.erfc(-(math.log(x) - mu) / (sigma * math.sqrt(2)))


UNION = tuple(sorted(set(ROUTER_BUCKETS) | set(COARSE_BUCKETS) | set(QUARTER_BUCKETS)))


def _fold(ladder: tuple[float, ...]) -> list[int]:
    """For each bucket of UNION (and +Inf), the index of the `ladder` bucket that holds it."""
    return [next((j for j, edge in enumerate(ladder) if edge >= upper), len(ladder)) for upper in UNION] + [len(ladder)]


FOLDS = {ladder: _fold(ladder) for ladder in (ROUTER_BUCKETS, COARSE_BUCKETS, QUARTER_BUCKETS)}


def bucket_chances(median: float) -> list[float]:
    """For each bucket of UNION, the chance a latency lands there given it is above the buckets before it."""
    mu, chances, below = math.log(median), [], 0.0
    for upper in UNION:
        cdf = _lognormal_cdf(upper, mu, LATENCY_SIGMA)
        chances.append(min(1.0, (cdf - below) / (1.0 - below)) if below < 1.0 else 0.0)
        below = cdf
    return chances


def latency_counts(rng: random.Random, n: int, chances: list[float]) -> list[int]:
    """n lognormal latencies binned on UNION (+Inf last): a multinomial drawn as conditional binomials."""
    counts, left = [], n
    for chance in chances:
        k = binomial(rng, left, chance) if left else 0
        counts.append(k)
        left -= k
    counts.append(left)
    return counts


def histogram(union_counts: list[int], ladder: tuple[float, ...]) -> Histogram:
    if not union_counts:  # a scenario that judges no latency draws none
        return Histogram(le=[None], counts=[0])
    counts = [0] * (len(ladder) + 1)
    for index, k in zip(FOLDS[ladder], union_counts, strict=True):
        counts[index] += k
    return Histogram(le=[*ladder, None], counts=counts, count=sum(counts))


# ------------------------------------------------------------------------------------------ rollouts


@dataclass
class Track:
    """One method's analysis state through one rollout."""

    spec: AnalysisSpec
    evidence: list[EvidenceState] = field(default_factory=list)
    previous: AnalysisRun | None = None
    rolled_back_at: tuple[int, int] | None = None  # (interval, candidate samples so far)


def version_stats(role: str, requests: int, errors: int, declines: int, latency: Histogram) -> VersionStats:
    empty = Histogram(le=[None], counts=[0])
    return VersionStats(
        role=role,
        requests=requests,
        errors=errors,
        predictions=requests,
        declines=declines,
        latency_seconds=latency,
        scores=empty,
    )


def simulate(scenario: Scenario, rollouts: int, seed: int) -> dict:
    tracks_by_spec: dict[str, list[list[Track]]] = {label: [] for label in scenario.specs}
    rng = random.Random(seed)
    timed = any(m.metric == LATENCY.metric for metrics, _ in scenario.specs.values() for m in metrics)
    for _ in range(rollouts):
        p99 = math.exp(rng.uniform(*map(math.log, STABLE_P99_RANGE)))
        median = p99 / math.exp(Z99 * LATENCY_SIGMA)
        cand_chances, stab_chances = (
            bucket_chances(median * scenario.latency_factor),
            bucket_chances(median),
        )
        tracks = {
            label: [
                Track(
                    AnalysisSpec(
                        metrics=[m.model_copy(update={"max": m.max * factor}) for m in metrics],
                        evidence=evidence,
                        min_samples=100,
                        failure_limit=2,
                        alpha=0.05,
                    )
                )
                for _, evidence, factor in METHODS
            ]
            for label, (metrics, _) in scenario.specs.items()
        }
        interval, samples = 0, 0
        for weight, count in STEPS:
            for _ in range(count):
                interval += 1
                cand_n = binomial(rng, REQUESTS, weight / 100)
                stab_n = REQUESTS - cand_n
                samples += cand_n
                cand = (
                    binomial(rng, cand_n, scenario.error_rate),
                    binomial(rng, cand_n, scenario.decline_rate),
                    latency_counts(rng, cand_n, cand_chances) if timed else [],
                )
                stab = (
                    binomial(rng, stab_n, ERROR_RATE),
                    binomial(rng, stab_n, DECLINE_RATE),
                    latency_counts(rng, stab_n, stab_chances) if timed else [],
                )
                windows: dict[tuple[float, ...], RouterWindow] = {}  # the same traffic for every spec
                for label, (metrics, ladder) in scenario.specs.items():
                    live = [t for t in tracks[label] if t.rolled_back_at is None]
                    if not live:
                        continue
                    if ladder not in windows:
                        windows[ladder] = RouterWindow(
                            candidate=version_stats(
                                "candidate",
                                cand_n,
                                *cand[:2],
                                histogram(cand[2], ladder),
                            ),
                            stable=version_stats("stable", stab_n, *stab[:2], histogram(stab[2], ladder)),
                            shadow=None,
                            replicas=1,
                            seconds=60.0,
                        )
                    window = windows[ladder]
                    observations = [observe(m, window, shadow=False) for m in metrics]
                    for track in live:
                        result = analyse(
                            track.spec,
                            observations,
                            track.evidence,
                            now=NOW,
                            step=interval,
                            previous=track.previous,
                        )
                        track.evidence, track.previous = result.evidence, result.run
                        if result.run.decisive or result.run.consecutive_failures >= track.spec.failure_limit:
                            track.rolled_back_at = (interval, samples)
        for label in scenario.specs:
            tracks_by_spec[label].append(tracks[label])
    good = scenario.name in ("good", "at_the_bound")
    return {label: summarise(runs, good) for label, runs in tracks_by_spec.items()}


def summarise(runs: list[list[Track]], good: bool) -> dict:
    out = {}
    for index, (method, _, _) in enumerate(METHODS):
        hits = [run[index].rolled_back_at for run in runs if run[index].rolled_back_at is not None]
        rate = len(hits) / len(runs)
        figures: dict = {
            "rollouts": len(runs),
            "rollbacks": len(hits),
            "false_rollback_rate" if good else "detection_rate": round(rate, 4),
            "ci95_halfwidth": round(1.96 * math.sqrt(max(rate * (1 - rate), 1e-12) / len(runs)), 4),
        }
        if not good:
            # over ALL bad rollouts, so a rule that detects rarely does not look fast
            figures["detected_by_interval"] = {
                str(k): round(sum(1 for i, _ in hits if i <= k) / len(runs), 4) for k in (5, 10, 15)
            }
        if hits and not good:
            figures["samples_to_detection"] = {
                "mean": round(statistics.fmean(s for _, s in hits), 1),
                "median": statistics.median(s for _, s in hits),
            }
            figures["intervals_to_detection"] = {
                "mean": round(statistics.fmean(i for i, _ in hits), 2),
                "median": statistics.median(i for i, _ in hits),
            }
        out[method] = figures
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=500, help="simulated rollouts per scenario")
    parser.add_argument("--seed", type=int, default=20261130, help="scenario i uses seed + i")
    args = parser.parse_args()
    started = time.perf_counter()
    scenarios = {}
    for offset, scenario in enumerate(SCENARIOS):
        t0 = time.perf_counter()
        scenarios[scenario.name] = simulate(scenario, args.rollouts, args.seed + offset)
        print(
            f"{scenario.name}: {json.dumps(scenarios[scenario.name])} ({time.perf_counter() - t0:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
    decisions = {
        "command": "services/controller/.venv/bin/python bench/controller/decisions.py"
        + (f" --rollouts {args.rollouts}" if args.rollouts != 500 else "")
        + (f" --seed {args.seed}" if args.seed != 20261130 else ""),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds": round(time.perf_counter() - started, 1),
        "seeds": {s.name: args.seed + i for i, s in enumerate(SCENARIOS)},
        "setup": {
            "requests_per_interval": REQUESTS,
            "interval": "1m",
            "steps": [{"weight_percent": w, "intervals": n} for w, n in STEPS],
            "candidate_samples_if_never_rolled_back": sum(REQUESTS * w // 100 * n for w, n in STEPS),
            "stable": {
                "error_rate": ERROR_RATE,
                "decline_rate": DECLINE_RATE,
                "latency": f"lognormal, sigma {LATENCY_SIGMA}, p99 log-uniform in {list(STABLE_P99_RANGE)} s",
            },
            "analysis": {"alpha": 0.05, "minSamples": 100, "failureLimit": 2},
            "metrics": {
                m.name: {"metric": m.metric, "max": m.max, "relativeToStable": True}
                for m in (ERRORS, DECLINES, LATENCY)
            },
            "router_buckets": "services/router LATENCY_BUCKETS: 0.001, 0.002, 0.004 * 2^(k/8) for k = 0..72 (x1.09 a"
            " bucket up to 2.05 s), 5, 10, 30",
            "coarse_buckets": list(COARSE_BUCKETS),
            "x1_19_buckets": "0.0005 * 2^(k/4), k = 0..64 (x1.19 a bucket, up to 32.8 s)",
            "rollback": "Sequential: a decisive run; Interval: failureLimit failed runs in a row",
        },
        "scenarios": scenarios,
    }
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous = existing.get("decisions", {}).get("previous_method")
    if previous:  # figures of the method this one replaced, kept for comparison (not rerun)
        decisions["previous_method"] = previous
    existing["decisions"] = decisions
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {RESULTS} in {decisions['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
