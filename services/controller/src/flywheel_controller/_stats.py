"""Always-valid sequential tests for rates: the statistics behind `evidence: Sequential` (stdlib `math` only).

Argo Rollouts and Flagger compare every interval with a fixed threshold. Looking at a fixed-horizon test at
every interval inflates false alarms with each look, and a threshold on one interval's rate, with no test at
all, fails a good candidate whenever a small interval is unlucky. A mixture sequential probability ratio test
(mSPRT; Johari, Pekelis & Walsh, "Always valid inference", 2017/2022) gives a p-value that may be looked at
after every interval, forever: the chance that it EVER drops to alpha under the null is <= alpha (Ville's
inequality on a non-negative supermartingale), which is the "alpha over the whole rollout" the CRD promises.

The statistic is the normal approximation of a rate (or a difference of two rates) with its plug-in variance:
for an estimate θ̂ with variance V and a normal mixture N(0, τ²) over the effect,

    Λ = sqrt(V / (V + τ²)) · exp(θ̂² τ² / (2 V (V + τ²)))

We use the one-sided version: the same mixture restricted to harmful effects (a half-normal prior, θ > 0),
which multiplies Λ by 2·Φ(θ̂ τ / sqrt(V (V + τ²))). Under any θ <= 0 each likelihood ratio in the mixture has
expectation <= 1, so the one-sided mixture is a supermartingale over the whole composite null "the candidate
is within its bound", not just at its edge, and it needs about half the evidence of the two-sided one to
reach the same p. Only a harmful estimate (θ̂ > 0) moves the p-value at all, and it never rises: p_n =
min(p_{n-1}, 1/Λ_n).

The guarantee is exact for normal observations with known variance; here the variance is a plug-in from rates
smoothed as (x + 1)/(n + 2), so that an interval with no errors yet does not claim a variance of zero (which
would make any first error look infinitely significant). tests/test_stats.py checks by simulation that the
false rejection rate at the very edge of the null stays under alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TAU_MIN = 0.001
"""Smallest mixture scale: a tenth of a percentage point (a p99.9 exceedance share, a 0.1% error budget)."""
TAU_MAX = 0.05
"""Largest mixture scale: five points (a median's exceedance share moving from 50% to 55%)."""
TAU_RELATIVE = 0.01
"""Mixture scale for candidate-minus-stable bounds: one percentage point (or the bound, when larger)."""


def smoothed_rate(x: int, n: int) -> float:
    """(x + 1) / (n + 2): the rate used for variances, never 0 or 1 (Laplace's rule of succession)."""
    return (x + 1) / (n + 2)


def rate_variance(x: int, n: int) -> float:
    """Variance of the observed rate x/n, from the smoothed rate (n > 0)."""
    p = smoothed_rate(x, n)
    return p * (1 - p) / n


def mixture_scale(bound: float, *, relative: bool) -> float:
    """The mixture's τ for a test of a rate against `bound`, fixed by the spec before any data is seen.

    τ is the spread of effects the mixture bets on: the test is most powerful for effects of about τ and loses
    only a logarithmic factor for effects a few times larger or smaller. Regressions worth stopping a rollout
    for are about the size of the rate itself when events are rare (a 1% error budget doubling; a p99's 1%
    exceedance share doubling; a p99.9's 0.1%) and a few points when they are common, so an absolute bound b
    takes τ = min(b, 1 - b) clamped to [0.1, 5] points. A relative bound (candidate minus stable) says nothing
    about the rate's level, so it takes one point, or the bound itself when that is larger.
    """
    if relative:
        return min(TAU_MAX, max(TAU_RELATIVE, abs(bound)))
    return min(TAU_MAX, max(TAU_MIN, min(bound, 1 - bound)))


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def log_mixture_ratio(effect: float, variance: float, tau: float, *, one_sided: bool = True) -> float:
    """log Λ of the normal-mixture SPRT for an estimate `effect` (θ̂) with `variance` (V) and mixture scale τ."""
    spread = variance + tau * tau
    log_ratio = 0.5 * math.log(variance / spread) + effect * effect * tau * tau / (2 * variance * spread)
    if one_sided:
        harmful_mass = 2 * _normal_cdf(effect * tau / math.sqrt(variance * spread))
        log_ratio += math.log(harmful_mass) if harmful_mass > 0 else -math.inf
    return log_ratio


def always_valid_p(previous: float, effect: float, variance: float, tau: float) -> float:
    """The running always-valid p-value after one more look: min(previous, 1/Λ), in [0, 1].

    `effect` is signed so that positive is harmful; a non-harmful estimate (or no variance yet) leaves the
    p-value where it was, so p never rises and never moves on evidence pointing the good way.
    """
    previous = min(1.0, max(0.0, previous))
    if effect <= 0 or variance <= 0 or tau <= 0:
        return previous
    log_ratio = log_mixture_ratio(effect, variance, tau)
    return min(previous, math.exp(-log_ratio)) if log_ratio > 0 else previous


@dataclass(frozen=True)
class RateTest:
    """A cumulative rate against its bound: the signed effect (candidate - [stable] - bound), how much of it
    points the harmful way, and its variance."""

    effect: float
    harmful: float
    variance: float

    def p_value(self, previous: float, tau: float) -> float:
        return always_valid_p(previous, self.harmful, self.variance, tau)


def rate_test(
    candidate_x: int,
    candidate_n: int,
    bound: float,
    *,
    stable_x: int | None = None,
    stable_n: int | None = None,
    harmful_above: bool = True,
) -> RateTest | None:
    """The candidate's cumulative rate (minus the stable's, when given) against `bound`.

    harmful_above: a `max` bound (the rate must stay at or below it); False for a `min` bound. None when the
    candidate (or a given stable) has no trials yet.
    """
    if candidate_n <= 0:
        return None
    effect = candidate_x / candidate_n - bound
    variance = rate_variance(candidate_x, candidate_n)
    if stable_n is not None:
        if stable_n <= 0 or stable_x is None:
            return None
        effect -= stable_x / stable_n
        variance += rate_variance(stable_x, stable_n)
    return RateTest(effect=effect, harmful=effect if harmful_above else -effect, variance=variance)
