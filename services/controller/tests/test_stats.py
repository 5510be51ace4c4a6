"""The always-valid test: known values, a p-value that never rises, alpha kept over whole rollouts, power."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flywheel_controller._stats import (
    EFFECTS,
    TAU_MAX,
    TAU_MIN,
    always_valid_p,
    log_binomial_ratio,
    log_mixture_ratio,
    mixture_scale,
    rate_test,
    rate_variance,
    smoothed_rate,
)


def binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def test_walds_binomial_ratio_matches_a_hand_computation() -> None:
    # 2 events in 10 trials, 20% against 10%: 2^2 · (0.8 / 0.9)^8
    assert math.exp(log_binomial_ratio(2, 10, 0.1, 0.2)) == pytest.approx(4 * (8 / 9) ** 8)


def test_the_mixture_is_the_average_of_walds_ratios_at_one_two_and_four_effect_scales() -> None:
    assert EFFECTS == (1.0, 2.0, 4.0)
    expected = sum(math.exp(log_binomial_ratio(5, 100, 0.015, 0.015 + k * 0.005)) for k in EFFECTS) / 3
    assert math.exp(log_mixture_ratio(5, 100, 0.015, 0.005)) == pytest.approx(expected)


def test_a_min_bound_bets_on_rates_below_it() -> None:
    expected = sum(math.exp(log_binomial_ratio(70, 100, 0.9, 0.9 - k * 0.05)) for k in EFFECTS) / 3
    assert math.exp(log_mixture_ratio(70, 100, 0.9, 0.05, harmful_above=False)) == pytest.approx(expected)


def test_alternatives_that_would_leave_zero_one_stop_halfway_to_the_edge() -> None:
    # 0.9 + 0.05·{2, 4} > 0.95: both become 0.95
    expected = (math.exp(log_binomial_ratio(99, 100, 0.9, 0.95)) * 3) / 3
    assert math.exp(log_mixture_ratio(99, 100, 0.9, 0.05)) == pytest.approx(expected)
    assert log_mixture_ratio(5, 5, 1.0, 0.05) == 0.0  # a null that covers every rate: no evidence, ever
    assert log_mixture_ratio(0, 5, 0.0, 0.05, harmful_above=False) == 0.0


@pytest.mark.parametrize(("p0", "p"), [(0.01, 0.01), (0.01, 0.002), (0.3, 0.25), (0.5, 0.0)])
def test_every_mixture_is_a_supermartingale_for_every_rate_within_the_bound(p0: float, p: float) -> None:
    # E[mixture after n trials] = sum over x of Binomial(n, p)(x) · mixture(x): 1 at the edge, below inside
    n = 60
    expectation = sum(
        math.comb(n, x) * p**x * (1 - p) ** (n - x) * math.exp(log_mixture_ratio(x, n, p0, 0.01)) for x in range(n + 1)
    )
    assert expectation <= 1 + 1e-9
    if p == p0:
        assert expectation == pytest.approx(1.0)


def test_evidence_pointing_the_good_way_never_moves_the_p_value() -> None:
    assert log_mixture_ratio(0, 500, 0.01, 0.01) < 0  # no events where 1% were allowed
    assert always_valid_p(0.4, log_mixture_ratio(0, 500, 0.01, 0.01)) == 0.4
    assert always_valid_p(1.0, 0.0) == 1.0
    assert always_valid_p(0.7, math.log(2)) == 0.5


def test_rates_are_smoothed_so_zero_events_still_have_a_variance() -> None:
    assert smoothed_rate(0, 0) == 0.5
    assert smoothed_rate(0, 98) == 0.01
    assert rate_variance(0, 98) == pytest.approx(0.01 * 0.99 / 98)


def test_against_the_stable_the_null_rate_is_the_stables_plus_the_bound_and_the_ratio_is_tempered() -> None:
    test = rate_test(30, 1000, 0.005, stable_x=9, stable_n=998)
    assert test is not None
    assert test.effect == pytest.approx(0.03 - 9 / 998 - 0.005)
    assert test.harmful == test.effect
    assert test.null_rate == pytest.approx(0.01 + 0.005)  # the stable's smoothed rate, (9 + 1) / (998 + 2)
    candidate, stable = 0.015 * 0.985 / 1000, 0.01 * 0.99 / 998
    assert test.weight == pytest.approx(candidate / (candidate + stable))
    assert test.log_ratio(0.01) == pytest.approx(test.weight * log_mixture_ratio(30, 1000, 0.015, 0.01))


def test_the_tempering_fades_as_the_stables_sample_grows() -> None:
    small, large = (
        rate_test(30, 1000, 0.005, stable_x=10, stable_n=1000),
        rate_test(30, 1000, 0.005, stable_x=1000, stable_n=100_000),
    )
    assert small is not None and large is not None
    assert 0.5 < small.weight < large.weight < 1
    assert large.weight > 0.98


def test_an_absolute_bound_is_tested_exactly() -> None:
    test = rate_test(3, 100, 0.01)
    assert test is not None and test.weight == 1.0 and test.null_rate == 0.01
    assert test.log_ratio(0.01) == log_mixture_ratio(3, 100, 0.01, 0.01)


def test_a_min_bound_is_harmful_below() -> None:
    test = rate_test(80, 100, 0.9, harmful_above=False)
    assert test is not None and test.effect == pytest.approx(-0.1) and test.harmful == pytest.approx(0.1)
    assert test.log_ratio(0.05) > 0


def test_no_trials_means_no_test() -> None:
    assert rate_test(0, 0, 0.01) is None
    assert rate_test(3, 100, 0.0, stable_x=0, stable_n=0) is None


def test_the_mixture_scale_follows_the_bound_within_its_clamp() -> None:
    assert mixture_scale(0.01, relative=False) == 0.01  # a p99's exceedance share, a 1% error budget
    assert mixture_scale(0.001, relative=False) == 0.001  # a p99.9
    assert mixture_scale(0.0, relative=False) == TAU_MIN
    assert mixture_scale(0.5, relative=False) == TAU_MAX  # a median
    assert mixture_scale(0.99, relative=False) == pytest.approx(0.01)
    assert mixture_scale(0.005, relative=True) == 0.01
    assert mixture_scale(0.03, relative=True) == 0.03


def rollout_rejects(
    rng: random.Random,
    rate: float,
    bound: float,
    *,
    stable: float | None,
    intervals: int,
    n: int,
    alpha: float,
    harmful_above: bool = True,
    ramp: tuple[float, ...] | None = None,
) -> bool:
    """One rollout of `intervals` looks: n candidate trials a look (4n for the stable), or, with `ramp`,
    5n trials a look split by the candidate's share at each look."""
    cx = cn = sx = sn = 0
    p = 1.0
    for look in range(intervals):
        share = ramp[look] if ramp else 0.2
        c = round(5 * n * share)
        cx, cn = cx + binomial(rng, c, rate), cn + c
        if stable is not None:
            sx, sn = sx + binomial(rng, 5 * n - c, stable), sn + 5 * n - c
        test = rate_test(
            cx,
            cn,
            bound,
            stable_x=sx if stable is not None else None,
            stable_n=sn if stable is not None else None,
            harmful_above=harmful_above,
        )
        assert test is not None
        p = test.p_value(p, mixture_scale(bound, relative=stable is not None))
        if p <= alpha:
            return True
    return False


def test_a_candidate_exactly_at_its_bound_is_rejected_in_at_most_alpha_of_1000_rollouts() -> None:
    # the edge of the null is the hardest case: 15 looks of 100 trials, the rate exactly at an absolute bound
    rng = random.Random(7)
    rejected = sum(rollout_rejects(rng, 0.02, 0.02, stable=None, intervals=15, n=100, alpha=0.05) for _ in range(1000))
    assert rejected <= 50


def test_a_rare_event_exactly_at_its_bound_is_rejected_in_at_most_alpha_of_1000_rollouts() -> None:
    # a p99's 1% exceedance share, 30 looks of 100: where a normal approximation would be poorest
    rng = random.Random(5)
    rejected = sum(rollout_rejects(rng, 0.01, 0.01, stable=None, intervals=30, n=100, alpha=0.05) for _ in range(1000))
    assert rejected <= 50


def test_a_candidate_exactly_at_a_min_bound_is_rejected_in_at_most_alpha_of_1000_rollouts() -> None:
    rng = random.Random(13)
    rejected = sum(
        rollout_rejects(rng, 0.9, 0.9, stable=None, intervals=15, n=100, alpha=0.05, harmful_above=False)
        for _ in range(1000)
    )
    assert rejected <= 50


def test_a_candidate_exactly_its_bound_above_the_stable_is_rejected_in_at_most_alpha_of_1000_rollouts() -> None:
    rng = random.Random(11)
    rejected = sum(
        rollout_rejects(rng, 0.015, 0.005, stable=0.01, intervals=15, n=100, alpha=0.05) for _ in range(1000)
    )
    assert rejected <= 50


def test_the_plug_in_for_the_stable_keeps_alpha_through_a_traffic_ramp_in_1000_rollouts() -> None:
    # the approximate part: the stable's rate estimated as we go, the split moving 5% -> 25% -> 50%
    rng = random.Random(17)
    ramp = (0.05,) * 5 + (0.25,) * 5 + (0.5,) * 5
    rejected = sum(
        rollout_rejects(rng, 0.06, 0.01, stable=0.05, intervals=15, n=400, alpha=0.05, ramp=ramp) for _ in range(1000)
    )
    assert rejected <= 50


def test_errors_three_times_the_stables_are_found_within_3000_candidate_samples() -> None:
    rng = random.Random(3)
    found = sum(rollout_rejects(rng, 0.03, 0.005, stable=0.01, intervals=30, n=100, alpha=0.05) for _ in range(200))
    assert found >= 190


def test_with_exactly_expected_counts_a_tripled_error_rate_needs_about_800_samples() -> None:
    # deterministic: the first n (in steps of 100) at which 3% vs 1% (bound +0.5 points) reaches p <= 0.05
    p, n = 1.0, 0
    while p > 0.05:
        n += 100
        test = rate_test(round(0.03 * n), n, 0.005, stable_x=round(0.01 * 4 * n), stable_n=4 * n)
        assert test is not None
        p = test.p_value(p, 0.01)
    assert 500 <= n <= 1000


@given(
    steps=st.lists(
        st.tuples(st.integers(0, 50), st.integers(1, 500), st.integers(0, 200), st.integers(1, 2000)),
        min_size=1,
        max_size=20,
    ),
    bound=st.floats(-0.05, 0.2),
    above=st.booleans(),
)
def test_p_values_stay_in_zero_one_and_never_rise(steps, bound, above) -> None:
    cx = cn = sx = sn = 0
    p = 1.0
    for x, n, y, m in steps:
        cx, cn, sx, sn = cx + min(x, n), cn + n, sx + min(y, m), sn + m
        test = rate_test(cx, cn, bound, stable_x=sx, stable_n=sn, harmful_above=above)
        assert test is not None
        new = test.p_value(p, mixture_scale(bound, relative=True))
        assert 0.0 <= new <= p <= 1.0
        p = new


@given(n=st.integers(1, 5000), share=st.floats(0, 1), p0=st.floats(1e-4, 0.5), scale=st.floats(1e-3, 0.05))
def test_one_more_event_is_never_weaker_evidence(n, share, p0, scale) -> None:
    x = min(n - 1, int(share * n))
    assert log_mixture_ratio(x + 1, n, p0, scale) >= log_mixture_ratio(x, n, p0, scale)
