"""The always-valid test: known values, a p-value that never rises, alpha kept over whole rollouts, power."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flywheel_controller._stats import (
    TAU_MAX,
    TAU_MIN,
    always_valid_p,
    log_mixture_ratio,
    mixture_scale,
    rate_test,
    rate_variance,
    smoothed_rate,
)


def binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def test_the_two_sided_mixture_matches_johari_pekelis_walsh_by_hand() -> None:
    # θ̂ = 0.02, V = 1e-4, τ = 0.01: Λ = sqrt(1/2) · exp(4e-8 / 4e-8) = e / sqrt(2)
    assert math.exp(log_mixture_ratio(0.02, 1e-4, 0.01, one_sided=False)) == pytest.approx(math.e / math.sqrt(2))


def test_the_one_sided_mixture_adds_the_harmful_half_of_the_prior() -> None:
    # times 2·Φ(θ̂τ / sqrt(V(V+τ²))) = 2·Φ(sqrt 2)
    two_phi = 1 + math.erf(1.0)  # 2·Φ(sqrt 2) = 1 + erf(1)
    assert math.exp(log_mixture_ratio(0.02, 1e-4, 0.01)) == pytest.approx(math.e / math.sqrt(2) * two_phi)


def test_the_one_sided_mixture_is_the_integral_over_harmful_effects() -> None:
    # Λ₊ = ∫_0^∞ exp((θθ̂ - θ²/2)/V) · 2·N(θ; 0, τ²) dθ, by the midpoint rule
    effect, variance, tau = 0.013, 4e-5, 0.01
    step = tau / 2000
    integral = sum(
        math.exp((t * effect - t * t / 2) / variance)
        * 2
        * math.exp(-t * t / (2 * tau * tau))
        / (tau * math.sqrt(2 * math.pi))
        * step
        for t in ((i + 0.5) * step for i in range(20000))
    )
    assert math.exp(log_mixture_ratio(effect, variance, tau)) == pytest.approx(integral, rel=1e-4)


def test_evidence_pointing_the_good_way_never_moves_the_p_value() -> None:
    assert always_valid_p(0.4, -0.03, 1e-4, 0.01) == 0.4
    assert always_valid_p(1.0, 0.0, 1e-4, 0.01) == 1.0
    assert always_valid_p(0.7, 0.02, 0.0, 0.01) == 0.7


def test_rates_are_smoothed_so_zero_events_still_have_a_variance() -> None:
    assert smoothed_rate(0, 0) == 0.5
    assert smoothed_rate(0, 98) == 0.01
    assert rate_variance(0, 98) == pytest.approx(0.01 * 0.99 / 98)


def test_a_rate_test_against_the_stable_subtracts_rates_and_adds_variances() -> None:
    test = rate_test(30, 1000, 0.005, stable_x=10, stable_n=1000)
    assert test is not None
    assert test.effect == pytest.approx(0.03 - 0.01 - 0.005)
    assert test.harmful == test.effect
    assert test.variance == pytest.approx(rate_variance(30, 1000) + rate_variance(10, 1000))


def test_a_min_bound_is_harmful_below() -> None:
    test = rate_test(80, 100, 0.9, harmful_above=False)
    assert test is not None and test.effect == pytest.approx(-0.1) and test.harmful == pytest.approx(0.1)


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
    rng: random.Random, rate: float, bound: float, *, stable: float | None, intervals: int, n: int, alpha: float
) -> bool:
    cx = cn = sx = sn = 0
    p = 1.0
    for _ in range(intervals):
        cx, cn = cx + binomial(rng, n, rate), cn + n
        if stable is not None:
            sx, sn = sx + binomial(rng, 4 * n, stable), sn + 4 * n
        test = rate_test(
            cx, cn, bound, stable_x=sx if stable is not None else None, stable_n=sn if stable is not None else None
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


def test_a_candidate_exactly_its_bound_above_the_stable_is_rejected_in_at_most_alpha_of_1000_rollouts() -> None:
    rng = random.Random(11)
    rejected = sum(
        rollout_rejects(rng, 0.015, 0.005, stable=0.01, intervals=15, n=100, alpha=0.05) for _ in range(1000)
    )
    assert rejected <= 50


def test_errors_three_times_the_stables_are_found_within_3000_candidate_samples() -> None:
    rng = random.Random(3)
    found = sum(rollout_rejects(rng, 0.03, 0.005, stable=0.01, intervals=30, n=100, alpha=0.05) for _ in range(200))
    assert found >= 190


def test_with_exactly_expected_counts_a_tripled_error_rate_needs_about_1200_samples() -> None:
    # deterministic: the first n (in steps of 100) at which 3% vs 1% (bound +0.5 points) reaches p <= 0.05
    p, n = 1.0, 0
    while p > 0.05:
        n += 100
        test = rate_test(round(0.03 * n), n, 0.005, stable_x=round(0.01 * 4 * n), stable_n=4 * n)
        assert test is not None
        p = test.p_value(p, 0.01)
    assert 800 <= n <= 1600


@given(
    steps=st.lists(
        st.tuples(st.integers(0, 50), st.integers(1, 500), st.integers(0, 200), st.integers(1, 2000)),
        min_size=1,
        max_size=20,
    ),
    bound=st.floats(-0.05, 0.2),
)
def test_p_values_stay_in_zero_one_and_never_rise(steps, bound) -> None:
    cx = cn = sx = sn = 0
    p = 1.0
    for x, n, y, m in steps:
        cx, cn, sx, sn = cx + min(x, n), cn + n, sx + min(y, m), sn + m
        test = rate_test(cx, cn, bound, stable_x=sx, stable_n=sn)
        assert test is not None
        new = test.p_value(p, mixture_scale(bound, relative=True))
        assert 0.0 <= new <= p <= 1.0
        p = new


@given(effect=st.floats(1e-4, 0.2), variance=st.floats(1e-7, 1e-2), tau=st.floats(1e-3, 0.05))
def test_a_larger_harmful_effect_is_never_weaker_evidence(effect, variance, tau) -> None:
    assert log_mixture_ratio(effect * 1.5, variance, tau) >= log_mixture_ratio(effect, variance, tau)
