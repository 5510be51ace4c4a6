"""analyse(): per-metric verdicts, the run's verdict and counters, evidence carried, Sequential vs Interval."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flywheel_contracts import AnalysisRun, AnalysisSpec, EvidenceState, Histogram, MetricSpec, Verdict
from flywheel_controller._analysis import NO_OBSERVATION, NO_STABLE, analyse
from flywheel_controller._types import AnalysisResult, Counts, Observation

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
ROUTER_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, None]

ERRORS = MetricSpec(name="errors", provider="router", metric="error_rate", max=0.005, relative_to_stable=True)
LATENCY = MetricSpec(name="p99", provider="router", metric="latency_p99_seconds", max=0.005, relative_to_stable=True)
DRIFT = MetricSpec(name="drift", provider="drift", metric="drifted_feature_share", max=0.3)


def spec(*metrics: MetricSpec, evidence: str = "Sequential", **kw) -> AnalysisSpec:
    return AnalysisSpec(metrics=list(metrics), evidence=evidence, **kw)


def errors(cn: int, cx: int, sn: int = 2000, sx: int = 20, name: str = "errors") -> Observation:
    return Observation(
        name=name, kind="proportion", candidate=Counts(cn, cx), stable=Counts(sn, sx) if sn else None, samples=cn
    )


def run(
    s: AnalysisSpec,
    observations: list[Observation],
    evidence: list[EvidenceState] | None = None,
    previous: AnalysisRun | None = None,
    step: int | None = 2,
) -> AnalysisResult:
    return analyse(s, observations, evidence or [], now=NOW, step=step, previous=previous)


def hist(counts: dict[float | None, int]) -> Histogram:
    per_bucket = [counts.get(edge, 0) for edge in ROUTER_BUCKETS]
    return Histogram(le=ROUTER_BUCKETS, counts=per_bucket, count=sum(per_bucket))


def latency(candidate: dict, stable: dict, name: str = "p99") -> Observation:
    c, s = hist(candidate), hist(stable)
    return Observation(
        name=name, kind="quantile", candidate_histogram=c, stable_histogram=s, quantile=0.99, samples=c.count
    )


# ------------------------------------------------------------------------------------------ proportions


def test_a_clearly_worse_candidate_fails_decisively_in_one_interval() -> None:
    result = run(spec(ERRORS), [errors(3000, 90)])  # 3.0% vs 1.0% over 3000 requests
    m = result.run.metrics[0]
    assert (m.verdict, result.run.verdict, result.run.decisive, result.decisive) == (
        Verdict.FAILED,
        Verdict.FAILED,
        True,
        True,
    )
    assert m.value == pytest.approx(0.02) and m.stable_value == pytest.approx(0.01)
    assert m.effect == pytest.approx(0.015) and m.p_value < 0.05
    assert (m.samples, m.stable_samples) == (3000, 2000)
    assert m.message.startswith("errors 3.0% vs stable 1.0%, +2.0 points") and "(always valid" in m.message


def test_a_candidate_like_the_stable_is_successful_and_its_p_value_stays_put() -> None:
    result = run(spec(ERRORS), [errors(500, 5)])
    m = result.run.metrics[0]
    assert (m.verdict, result.run.decisive, m.p_value) == (Verdict.SUCCESSFUL, False, 1.0)
    assert m.effect == pytest.approx(-0.005)


def test_evidence_accumulates_across_intervals_until_it_is_enough() -> None:
    s, evidence, previous, verdicts = spec(ERRORS), [], None, []
    for _ in range(10):
        result = run(s, [errors(200, 6)], evidence, previous)  # 3% vs 1%, 200 at a time: no single interval suffices
        evidence, previous = result.evidence, result.run
        verdicts.append(result.run.verdict)
        if result.decisive:
            break
    assert verdicts[0] is Verdict.SUCCESSFUL and verdicts[-1] is Verdict.FAILED and 2 < len(verdicts) < 10
    state = evidence[0]
    assert (state.name, state.intervals, state.candidate_n, state.candidate_x) == (
        "errors",
        len(verdicts),
        200 * len(verdicts),
        6 * len(verdicts),
    )
    assert state.stable_n == 2000 * len(verdicts) and state.p_value <= 0.05


def test_the_p_value_carried_never_rises() -> None:
    s, evidence, ps = spec(ERRORS), [], []
    for cx in (8, 0, 0, 0, 9, 1):
        result = run(s, [errors(200, cx)], evidence)
        evidence = result.evidence
        ps.append(result.run.metrics[0].p_value)
    assert ps == sorted(ps, reverse=True) and ps[1] == ps[0] < 1.0


def test_fewer_samples_than_min_samples_is_insufficient_but_still_counts_as_evidence() -> None:
    result = run(spec(ERRORS, min_samples=100), [errors(40, 1)])
    assert result.run.verdict is Verdict.INSUFFICIENT_SAMPLES
    assert (result.evidence[0].candidate_n, result.evidence[0].intervals) == (40, 1)


def test_an_absolute_bound_ignores_the_stable_in_the_test() -> None:
    absolute = MetricSpec(name="errors", provider="router", metric="error_rate", max=0.02)
    m = run(spec(absolute), [errors(1000, 10, sx=500)]).run.metrics[0]
    assert (m.verdict, m.value, m.effect) == (Verdict.SUCCESSFUL, 0.01, pytest.approx(-0.01))
    assert m.stable_value == 0.25  # shown, not tested
    assert run(spec(absolute), [errors(2000, 100)]).run.metrics[0].verdict is Verdict.FAILED


def test_a_min_bound_fails_a_rate_below_it() -> None:
    success = MetricSpec(name="approvals", provider="router", metric="decline_rate", min=0.9)
    low = Observation(name="approvals", kind="proportion", candidate=Counts(2000, 1700), samples=2000)
    m = run(spec(success), [low]).run.metrics[0]
    assert (m.verdict, m.effect) == (Verdict.FAILED, pytest.approx(-0.05))
    high = Observation(name="approvals", kind="proportion", candidate=Counts(2000, 1900), samples=2000)
    assert run(spec(success), [high]).run.metrics[0].verdict is Verdict.SUCCESSFUL


def test_relative_to_the_stable_without_stable_traffic_is_inconclusive_and_carries_evidence_unchanged() -> None:
    carried = [
        EvidenceState(
            name="errors", intervals=3, candidate_n=300, candidate_x=3, stable_n=6000, stable_x=60, p_value=0.5
        )
    ]
    result = run(spec(ERRORS), [errors(100, 1, sn=0)], carried)
    assert (result.run.verdict, result.run.metrics[0].message) == (Verdict.INCONCLUSIVE, NO_STABLE)
    assert result.evidence == carried


def test_alpha_is_split_over_the_router_metrics() -> None:
    # p of about 0.03: fails one metric alone (alpha 0.05), not one of two (0.025 each)
    obs = errors(1500, 42)
    alone = run(spec(ERRORS), [obs]).run.metrics[0]
    assert 0.025 < alone.p_value <= 0.05 and alone.verdict is Verdict.FAILED
    other = MetricSpec(name="declines", provider="router", metric="decline_rate", max=0.01, relative_to_stable=True)
    together = run(spec(ERRORS, other), [obs, errors(500, 25, sx=100, name="declines")]).run.metrics[0]
    assert together.p_value == alone.p_value and together.verdict is Verdict.SUCCESSFUL
    assert "fails at 0.025" in together.message


# ------------------------------------------------------------------------------------------- quantiles


def test_a_p99_well_above_the_stables_fails_on_exceedances() -> None:
    stable = {0.05: 1900, 0.1: 95, 0.25: 5}  # p99 in (0.05, 0.1]
    candidate = {0.05: 1800, 0.1: 120, 0.5: 80}  # 4% of requests surely slower than 0.105 s (above 0.25)
    m = run(spec(LATENCY), [latency(candidate, stable)]).run.metrics[0]
    assert m.verdict is Verdict.FAILED and m.p_value <= 0.05
    assert (m.value, m.stable_value) == (pytest.approx(0.4), 0.1)  # p99 0.5 s vs 0.1 s
    assert m.effect == pytest.approx(0.04 - 0.01)
    assert "surely slower than 0.105s" in m.message


def test_with_coarse_buckets_a_candidate_one_bucket_slower_cannot_be_told_from_the_stable() -> None:
    # every slow request sits in (0.1, 0.25], whose lower edge 0.1 is below the bound 0.105: none counts
    m = run(spec(LATENCY), [latency({0.1: 1800, 0.25: 200}, {0.05: 1900, 0.1: 100})]).run.metrics[0]
    assert (m.verdict, m.p_value, m.effect) == (Verdict.SUCCESSFUL, 1.0, pytest.approx(-0.01))
    interval = run(spec(LATENCY, evidence="Interval"), [latency({0.1: 1800, 0.25: 200}, {0.05: 1900, 0.1: 100})])
    assert interval.run.metrics[0].verdict is Verdict.FAILED  # the fixed rule compares bucket bounds


def test_an_absolute_latency_bound_counts_requests_beyond_it() -> None:
    absolute = MetricSpec(name="p99", provider="router", metric="latency_p99_seconds", max=0.1)
    result = run(spec(absolute), [latency({0.05: 1900, 0.25: 100}, {})])
    m = result.run.metrics[0]
    assert (m.verdict, m.value, m.stable_value, m.stable_samples) == (Verdict.FAILED, 0.25, None, 0)
    assert (result.evidence[0].candidate_n, result.evidence[0].candidate_x) == (2000, 100)


def test_a_latency_quantile_without_a_stable_or_with_a_min_is_inconclusive() -> None:
    assert run(spec(LATENCY), [latency({0.05: 500}, {})]).run.metrics[0].message == NO_STABLE
    stuck = run(spec(LATENCY), [latency({0.05: 500}, {None: 500})]).run.metrics[0]
    assert stuck.verdict is Verdict.INCONCLUSIVE and "above the largest bucket" in stuck.message
    floor = MetricSpec(name="p99", provider="router", metric="latency_p99_seconds", min=0.001)
    assert "max only" in run(spec(floor), [latency({0.05: 500}, {0.05: 500})]).run.metrics[0].message


def test_a_candidate_p99_in_the_inf_bucket_fails_the_interval_rule() -> None:
    m = run(spec(LATENCY, evidence="Interval"), [latency({0.05: 150, None: 50}, {0.05: 2000})]).run.metrics[0]
    assert (m.verdict, m.value) == (Verdict.FAILED, None) and "above the largest bucket" in m.message


# --------------------------------------------------------------------------------------- values, errors


def test_a_value_metric_is_judged_against_its_bounds_without_statistics() -> None:
    ok = run(spec(DRIFT), [Observation(name="drift", kind="value", value=0.1)])
    bad = run(spec(DRIFT), [Observation(name="drift", kind="value", value=0.4)])
    assert ok.run.verdict is Verdict.SUCCESSFUL and bad.run.verdict is Verdict.FAILED
    assert bad.run.decisive is False and bad.evidence == [] and bad.run.metrics[0].p_value is None


def test_a_relative_value_subtracts_the_stables_and_needs_it() -> None:
    relative = MetricSpec(name="drift", provider="prometheus", query="q", max=0.05, relative_to_stable=True)
    m = run(spec(relative), [Observation(name="drift", kind="value", value=0.3, stable_value=0.2)]).run.metrics[0]
    assert (m.verdict, m.value, m.stable_value) == (Verdict.FAILED, pytest.approx(0.1), 0.2)
    none = run(spec(relative), [Observation(name="drift", kind="value", value=0.3)]).run.metrics[0]
    assert none.verdict is Verdict.INCONCLUSIVE


def test_a_provider_error_or_a_missing_observation_is_inconclusive() -> None:
    failed = Observation(name="errors", kind="proportion", error="router unreachable: connection refused")
    result = run(spec(ERRORS, DRIFT), [failed])
    assert [m.verdict for m in result.run.metrics] == [Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE]
    assert [m.message for m in result.run.metrics] == ["router unreachable: connection refused", NO_OBSERVATION]
    assert result.run.verdict is Verdict.INCONCLUSIVE and result.evidence == []


# ---------------------------------------------------------------------------------------------- the run


def test_the_run_verdict_is_the_worst_of_its_metrics() -> None:
    drift_ok = Observation(name="drift", kind="value", value=0.0)
    drift_bad = Observation(name="drift", kind="value", value=1.0)
    unmeasured = Observation(name="drift", kind="value", error="drift service down")
    assert run(spec(ERRORS, DRIFT), [errors(500, 5), drift_ok]).run.verdict is Verdict.SUCCESSFUL
    assert run(spec(ERRORS, DRIFT), [errors(50, 0), drift_ok]).run.verdict is Verdict.INSUFFICIENT_SAMPLES
    assert run(spec(ERRORS, DRIFT), [errors(50, 0), unmeasured]).run.verdict is Verdict.INCONCLUSIVE
    assert run(spec(ERRORS, DRIFT), [errors(50, 0), drift_bad]).run.verdict is Verdict.FAILED
    empty = run(spec(), [])
    assert (empty.run.verdict, empty.run.metrics, empty.evidence) == (Verdict.SUCCESSFUL, [], [])


def test_the_run_counts_failures_and_inconclusive_runs_in_a_row() -> None:
    bad = Observation(name="drift", kind="value", value=1.0)
    thin = Observation(name="drift", kind="value", error="no data")
    first = run(spec(DRIFT), [bad])
    second = run(spec(DRIFT), [bad], previous=first.run)
    assert (first.run.consecutive_failures, second.run.consecutive_failures) == (1, 2)
    third = run(spec(DRIFT), [thin], previous=second.run)
    assert (third.run.consecutive_failures, third.run.consecutive_inconclusive) == (0, 1)
    fourth = run(spec(ERRORS), [errors(10, 0)], previous=third.run)  # InsufficientSamples counts as inconclusive
    assert (fourth.run.verdict, fourth.run.consecutive_inconclusive) == (Verdict.INSUFFICIENT_SAMPLES, 2)
    assert run(spec(ERRORS), [errors(500, 5)], previous=fourth.run).run.consecutive_inconclusive == 0
    assert (fourth.run.time, fourth.run.step) == (NOW, 2)


def test_evidence_comes_back_in_spec_order_and_unknown_names_are_kept_untouched() -> None:
    declines = MetricSpec(name="declines", provider="router", metric="decline_rate", max=0.01, relative_to_stable=True)
    old = EvidenceState(name="retired", intervals=9, candidate_n=900)
    result = run(
        spec(declines, DRIFT, ERRORS),
        [errors(100, 1), errors(100, 5, name="declines"), Observation(name="drift", kind="value", value=0.0)],
        [old],
    )
    assert [e.name for e in result.evidence] == ["declines", "errors", "retired"]
    assert result.evidence[-1] is old


# ------------------------------------------------------------------------------------- Interval (baseline)


def test_the_interval_rule_fails_on_one_intervals_value_and_is_never_decisive() -> None:
    result = run(spec(ERRORS, evidence="Interval"), [errors(100, 2)])  # 2% vs 1%: over +0.5 points
    m = result.run.metrics[0]
    assert (m.verdict, result.run.decisive, m.value) == (Verdict.FAILED, False, pytest.approx(0.01))
    assert "always valid" not in m.message
    assert result.evidence[0].candidate_n == 100 and m.p_value is not None  # evidence still carried, shown


def test_the_interval_rule_checks_the_bound_before_min_samples() -> None:
    assert run(spec(ERRORS, evidence="Interval"), [errors(20, 1)]).run.verdict is Verdict.FAILED
    assert run(spec(ERRORS, evidence="Interval"), [errors(20, 0)]).run.verdict is Verdict.INSUFFICIENT_SAMPLES
    assert run(spec(ERRORS, evidence="Interval"), [errors(0, 0)]).run.verdict is Verdict.INSUFFICIENT_SAMPLES
    assert run(spec(ERRORS, evidence="Interval"), [errors(500, 5)]).run.verdict is Verdict.SUCCESSFUL


def test_the_interval_rule_ignores_accumulated_evidence() -> None:
    strong = [
        EvidenceState(
            name="errors", intervals=5, candidate_n=5000, candidate_x=150, stable_n=9000, stable_x=90, p_value=1e-6
        )
    ]
    result = run(spec(ERRORS, evidence="Interval"), [errors(500, 5)], strong)
    assert (result.run.verdict, result.run.decisive) == (Verdict.SUCCESSFUL, False)
    assert run(spec(ERRORS), [errors(500, 5)], strong).run.decisive  # while Sequential keeps its conclusion


@given(
    intervals=st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 40), st.integers(1, 2000), st.integers(0, 40)),
        min_size=1,
        max_size=12,
    ),
    evidence_mode=st.sampled_from(["Sequential", "Interval"]),
)
def test_any_stream_of_counts_gives_valid_p_values_and_consistent_counters(intervals, evidence_mode) -> None:
    s, evidence, previous = spec(ERRORS, evidence=evidence_mode), [], None
    last_p = 1.0
    for cn, cx, sn, sx in intervals:
        result = run(s, [errors(cn, min(cx, cn), sn, min(sx, sn))], evidence, previous)
        m = result.run.metrics[0]
        assert m.p_value is not None and 0.0 <= m.p_value <= last_p <= 1.0
        if previous is not None and result.run.verdict is Verdict.FAILED:
            assert result.run.consecutive_failures == previous.consecutive_failures + 1
        assert result.run.decisive == (evidence_mode == "Sequential" and result.run.verdict is Verdict.FAILED)
        last_p, evidence, previous = m.p_value, result.evidence, result.run


def test_a_band_keeps_alpha_for_a_candidate_at_one_edge_in_1000_rollouts() -> None:
    # both sides' evidence is averaged, so a band (min and max) fails no more than alpha of good candidates
    band = MetricSpec(name="declines", provider="router", metric="decline_rate", min=0.02, max=0.08)
    rng = random.Random(19)
    failed = 0
    for _ in range(1000):
        evidence: list[EvidenceState] = []
        for _ in range(15):
            x = sum(rng.random() < 0.08 for _ in range(100))
            result = run(spec(band), [errors(100, x, name="declines")], evidence)
            evidence = result.evidence
            if result.run.decisive:
                failed += 1
                break
    assert failed <= 50
