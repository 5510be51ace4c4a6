"""window(): the interval's growth of the router's cumulative figures; observe(): metric names onto counts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flywheel_contracts import Histogram, MetricSpec, RouterStats, ShadowStats, VersionStats
from flywheel_controller._router_metrics import NO_WINDOW, ROUTER_METRICS, observe, window
from flywheel_controller._types import Counts, RouterWindow

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SINCE = T0 + timedelta(minutes=1)
BUCKETS = [0.01, 0.1, 1.0, None]


def hist(*counts: int, le: list[float | None] = BUCKETS) -> Histogram:
    return Histogram(le=le, counts=list(counts), sum=0.01 * sum(counts), count=sum(counts))


def version(
    role: str = "candidate",
    requests: int = 0,
    errors: int = 0,
    predictions: int | None = None,
    declines: int = 0,
    latency: Histogram | None = None,
) -> VersionStats:
    return VersionStats(
        role=role,
        requests=requests,
        errors=errors,
        predictions=requests if predictions is None else predictions,
        declines=declines,
        latency_seconds=latency or hist(requests, 0, 0, 0),
        scores=hist(0, 0, 0, 0),
    )


def shadow(
    candidate: str | None = "v2",
    compared: int = 0,
    errors: int = 0,
    mismatches: int = 0,
    latency: Histogram | None = None,
) -> ShadowStats:
    return ShadowStats(
        candidate_version=candidate,
        mirrored=compared,
        compared=compared,
        candidate_errors=errors,
        predictions_compared=compared,
        decision_mismatches=mismatches,
        score_diff=hist(0, 0, 0, 0),
        candidate_latency_seconds=latency or hist(compared, 0, 0, 0),
    )


def stats(
    replica: str = "r1", started: datetime = T0, shadow_stats: ShadowStats | None = None, **versions: VersionStats
) -> RouterStats:
    return RouterStats(
        model="fraud",
        replica=replica,
        started_at=started,
        timestamp=started + timedelta(minutes=5),
        versions=versions,
        shadow=shadow_stats or shadow(),
    )


def win(before: dict, after: dict) -> RouterWindow:
    return window(before, after, since=SINCE, candidate="v2", stable="v1", seconds=60.0)


def test_a_replica_read_twice_contributes_its_growth() -> None:
    before = {"r1": stats(v1=version("stable", 1000, 10), v2=version("candidate", 100, 1))}
    after = {"r1": stats(v1=version("stable", 1900, 19), v2=version("candidate", 200, 5))}
    w = win(before, after)
    assert (w.candidate.requests, w.candidate.errors) == (100, 4)
    assert (w.stable.requests, w.stable.errors) == (900, 9)
    assert w.candidate.latency_seconds.counts == [100, 0, 0, 0] and w.candidate.role == "candidate"
    assert w.replicas == 1 and w.seconds == 60.0


def test_replicas_are_summed_field_by_field_histograms_included() -> None:
    before = {"r1": stats(v2=version(requests=100)), "r2": stats("r2", v2=version(requests=50))}
    after = {
        "r1": stats(v2=version(requests=150, errors=2, latency=hist(140, 10, 0, 0))),
        "r2": stats("r2", v2=version(requests=80, errors=1, latency=hist(70, 5, 5, 0))),
    }
    w = win(before, after)
    assert (w.candidate.requests, w.candidate.errors, w.replicas) == (80, 3, 2)
    assert w.candidate.latency_seconds.counts == [140 - 100 + 70 - 50, 15, 5, 0]
    assert w.candidate.latency_seconds.count == 80


def test_a_restarted_replica_counts_from_zero_when_it_started_inside_the_interval() -> None:
    before = {"r1": stats(v2=version(requests=5000, errors=40))}
    after = {"r1": stats(started=SINCE + timedelta(seconds=10), v2=version(requests=70, errors=1))}
    w = win(before, after)
    assert (w.candidate.requests, w.candidate.errors, w.replicas) == (70, 1, 1)


def test_a_new_replica_counts_whole_when_it_started_inside_the_interval() -> None:
    after = {"r9": stats("r9", started=SINCE + timedelta(seconds=1), v2=version(requests=30))}
    assert win({}, after).candidate.requests == 30


def test_a_replica_with_no_baseline_that_started_before_the_interval_is_skipped() -> None:
    after = {"r9": stats("r9", started=T0, v2=version(requests=30_000))}
    w = win({}, after)
    assert w.candidate is None and w.replicas == 0
    restarted_long_ago = {"r1": stats(started=T0 - timedelta(hours=1), v2=version(requests=10))}
    assert win(restarted_long_ago, after).replicas == 0


def test_a_version_missing_on_a_replica_contributes_nothing_and_one_without_traffic_is_none() -> None:
    before = {
        "r1": stats(v1=version("stable", 100)),
        "r2": stats("r2", v1=version("stable", 10), v2=version(requests=7)),
    }
    after = {
        "r1": stats(v1=version("stable", 200)),
        "r2": stats("r2", v1=version("stable", 10), v2=version(requests=9)),
    }
    w = win(before, after)
    assert w.candidate.requests == 2 and w.stable.requests == 100 and w.replicas == 2
    quiet = win(after, after)
    assert quiet.candidate is None and quiet.stable is None and quiet.shadow is None and quiet.replicas == 2


def test_a_version_that_appears_between_reads_counts_whole() -> None:
    before = {"r1": stats(v1=version("stable", 100))}
    after = {"r1": stats(v1=version("stable", 150), v2=version(requests=12, errors=1))}
    assert (win(before, after).candidate.requests, win(before, after).candidate.errors) == (12, 1)


def test_counters_that_went_down_without_a_restart_count_whole() -> None:
    # the router dropped the version's counters and began them again after the first read
    before = {"r1": stats(v2=version(requests=500, errors=3))}
    after = {"r1": stats(v2=version(requests=40, errors=1))}
    assert win(before, after).candidate.requests == 40


def test_a_replica_with_other_buckets_is_left_out_rather_than_mis_added() -> None:
    other = hist(5, 0, 0, le=[0.5, 2.0, None])
    after = {
        "r1": stats(v2=version(requests=10, latency=hist(10, 0, 0, 0))),
        "r2": stats("r2", started=SINCE, v2=version(requests=5, latency=other)),
    }
    w = win({"r1": stats(v2=version(requests=0))}, after)
    assert w.candidate.requests == 10 and w.replicas == 1


def test_shadow_figures_are_the_growth_for_the_candidate_only() -> None:
    before = {"r1": stats(shadow_stats=shadow(compared=100, errors=1, mismatches=2))}
    after = {"r1": stats(shadow_stats=shadow(compared=250, errors=4, mismatches=5))}
    s = win(before, after).shadow
    assert (s.compared, s.candidate_errors, s.decision_mismatches, s.candidate_version) == (150, 3, 3, "v2")


def test_shadow_counters_begun_again_for_a_new_candidate_count_whole() -> None:
    before = {"r1": stats(shadow_stats=shadow("v1b", compared=900))}
    after = {"r1": stats(shadow_stats=shadow("v2", compared=60, mismatches=1))}
    assert win(before, after).shadow.compared == 60
    other_candidate = {"r1": stats(shadow_stats=shadow("v3", compared=60))}
    assert win(before, other_candidate).shadow is None


# --------------------------------------------------------------------------------------------- observe


def spec(metric: str, relative: bool = False, name: str = "m") -> MetricSpec:
    return MetricSpec(name=name, provider="router", metric=metric, max=0.01, relative_to_stable=relative)


CANARY = RouterWindow(
    candidate=version("candidate", 500, 15, predictions=600, declines=40, latency=hist(400, 90, 9, 1)),
    stable=version("stable", 1500, 15, predictions=1800, declines=90, latency=hist(1400, 95, 5, 0)),
    shadow=None,
    replicas=2,
    seconds=60.0,
)
SHADOW = RouterWindow(
    candidate=None,
    stable=version("stable", 2000, 20, latency=hist(1900, 100, 0, 0)),
    shadow=shadow(compared=1000, errors=7, mismatches=12, latency=hist(800, 150, 50, 0)),
    replicas=1,
    seconds=60.0,
)


def test_the_router_knows_its_metric_names() -> None:
    assert {"error_rate", "decline_rate", "shadow_mismatch_rate", "shadow_error_rate"} <= ROUTER_METRICS
    assert {"latency_p50_seconds", "latency_p99_seconds", "latency_p999_seconds"} <= ROUTER_METRICS
    assert "latency_p49_seconds" not in ROUTER_METRICS and "latency_p100_seconds" not in ROUTER_METRICS


def test_error_rate_is_errors_of_requests_for_both_versions() -> None:
    o = observe(spec("error_rate", name="errors"), CANARY, shadow=False)
    assert (o.name, o.kind, o.candidate, o.stable, o.samples) == (
        "errors",
        "proportion",
        Counts(500, 15),
        Counts(1500, 15),
        500,
    )


def test_decline_rate_is_declines_of_predictions() -> None:
    o = observe(spec("decline_rate", relative=True), CANARY, shadow=False)
    assert (o.candidate, o.stable, o.samples) == (Counts(600, 40), Counts(1800, 90), 600)


@pytest.mark.parametrize(
    ("metric", "q"), [("latency_p99_seconds", 0.99), ("latency_p50_seconds", 0.5), ("latency_p999_seconds", 0.999)]
)
def test_latency_quantiles_carry_both_histograms(metric, q) -> None:
    o = observe(spec(metric), CANARY, shadow=False)
    assert (o.kind, o.quantile, o.samples) == ("quantile", q, 500)
    assert o.candidate_histogram == CANARY.candidate.latency_seconds
    assert o.stable_histogram == CANARY.stable.latency_seconds


def test_in_a_shadow_rollout_the_candidate_side_comes_from_the_mirrored_requests() -> None:
    errors = observe(spec("error_rate", relative=True), SHADOW, shadow=True)
    assert (errors.candidate, errors.stable, errors.samples) == (Counts(1000, 7), Counts(2000, 20), 1000)
    latency = observe(spec("latency_p99_seconds"), SHADOW, shadow=True)
    assert latency.candidate_histogram == SHADOW.shadow.candidate_latency_seconds and latency.samples == 1000
    assert latency.stable_histogram == SHADOW.stable.latency_seconds


def test_shadow_metrics_compare_mirrored_answers() -> None:
    mismatch = observe(spec("shadow_mismatch_rate"), SHADOW, shadow=True)
    assert (mismatch.kind, mismatch.candidate, mismatch.stable, mismatch.samples) == (
        "proportion",
        Counts(1000, 12),
        None,
        1000,
    )
    errors = observe(spec("shadow_error_rate"), SHADOW, shadow=True)
    assert (errors.candidate, errors.stable) == (Counts(1000, 7), Counts(2000, 20))


def test_metrics_that_cannot_be_measured_say_why() -> None:
    assert observe(spec("decline_rate"), SHADOW, shadow=True).error.endswith("use shadow_mismatch_rate")
    assert "only in a Shadow rollout" in observe(spec("shadow_mismatch_rate"), CANARY, shadow=False).error
    assert "drop relativeToStable" in observe(spec("shadow_mismatch_rate", relative=True), SHADOW, shadow=True).error
    unknown = observe(spec("p99_latency"), CANARY, shadow=False).error
    assert "'p99_latency'" in unknown and "error_rate" in unknown and "latency_pNN_seconds" in unknown
    assert observe(spec("error_rate"), None, shadow=False).error == NO_WINDOW


def test_a_candidate_without_traffic_is_zero_samples_not_an_error() -> None:
    quiet = RouterWindow(candidate=None, stable=CANARY.stable, shadow=None, replicas=1, seconds=60.0)
    errors = observe(spec("error_rate"), quiet, shadow=False)
    assert (errors.error, errors.candidate, errors.samples) == (None, None, 0)
    latency = observe(spec("latency_p99_seconds"), quiet, shadow=False)
    assert (latency.error, latency.candidate_histogram, latency.samples) == (None, None, 0)
    mirrored_nothing = observe(spec("shadow_mismatch_rate"), RouterWindow(None, None, None, 1, 60.0), shadow=True)
    assert (mirrored_nothing.error, mirrored_nothing.samples) == (None, 0)
