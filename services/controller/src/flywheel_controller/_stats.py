"""Always-valid sequential tests for rates: the statistics behind `evidence: Sequential` (stdlib `math` only).

Argo Rollouts and Flagger compare every interval with a fixed threshold. Looking at a fixed-horizon test at
every interval inflates false alarms with each look, and a threshold on one interval's rate, with no test at
all, fails a good candidate whenever a small interval is unlucky. A test supermartingale (Wald's likelihood
ratio, or a mixture of them; Ramdas et al., "Game-theoretic statistics and safe anytime-valid inference",
2023) gives a p-value that may be looked at after every interval, forever: the chance that it EVER drops to
alpha under the null is <= alpha (Ville's inequality), which is the "alpha over the whole rollout" the CRD
promises.

The statistic is exact for a rate against an absolute bound p0 (a `max` bound: H0 "p <= p0"). For each
alternative p1 > p0, Wald's binomial likelihood ratio of x events in n trials,

    LR(p1) = (p1 / p0)^x · ((1 - p1) / (1 - p0))^(n - x),

has expectation p·p1/p0 + (1 - p)(1 - p1)/(1 - p0) <= 1 per trial for every p <= p0, so it is a test
supermartingale over the whole composite null, not just at its edge; so is the equal-weight mixture over the
alternatives p1 = p0 + k·s, k in EFFECTS, with the effect scale s fixed by the spec before any data is seen
(`mixture_scale`). The mixture costs log(len(EFFECTS)) nats against knowing the true effect and, unlike a
normal approximation, stays exact for rare events (a 1% error rate, a p99's 1% exceedance share), where
most of the evidence is in the count of events. Only the cumulative counts are needed (the likelihood ratio
of iid trials depends on x and n alone), which is all status.evidence carries. A `min` bound mirrors it.

Against the stable (`relativeToStable`, H0 "candidate - stable <= d") the stable's rate is unknown. We plug
in its smoothed cumulative rate, test the candidate against p0 = stable + d, and temper the log likelihood
ratio by w = Vc / (Vc + Vs) (the candidate's share of the variance of the difference, both at the null):
in the normal limit that is exactly the two-sample likelihood ratio of the difference, and as the stable's
sample grows (w -> 1) it is the exact test above. This part is an approximation, not a theorem: the
stable's estimation error is accounted for to first order only, and pooling counts across weight steps
assumes the rates do not drift during the rollout. tests/test_stats.py checks by simulation that false
rejections at the very edge of the null stay under alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EFFECTS = (1.0, 2.0, 4.0)
"""The mixture's alternatives: effects of 1, 2 and 4 effect scales beyond the bound, weighted equally."""
TAU_MIN = 0.001
"""Smallest effect scale: a tenth of a percentage point (a p99.9 exceedance share, a 0.1% error budget)."""
TAU_MAX = 0.05
"""Largest effect scale: five points (a median's exceedance share moving from 50% to 55%)."""
TAU_RELATIVE = 0.01
"""Effect scale for candidate-minus-stable bounds: one percentage point (or the bound, when larger)."""
RATE_FLOOR = 1e-6
"""A null rate of 0 (a `max: 0` bound) is taken as this, so that one event is strong evidence, not infinite."""


def smoothed_rate(x: int, n: int) -> float:
    """(x + 1) / (n + 2): the rate used for plug-ins and variances, never 0 or 1 (Laplace's rule of succession)."""
    return (x + 1) / (n + 2)


def rate_variance(x: int, n: int) -> float:
    """Variance of the observed rate x/n, from the smoothed rate (n > 0)."""
    p = smoothed_rate(x, n)
    return p * (1 - p) / n


def mixture_scale(bound: float, *, relative: bool) -> float:
    """The effect scale s of a test of a rate against `bound`, fixed by the spec before any data is seen.

    The mixture bets on effects of s, 2s and 4s beyond the bound. Regressions worth stopping a rollout for
    are about the size of the rate itself when events are rare (a 1% error budget doubling; a p99's 1%
    exceedance share doubling; a p99.9's 0.1%) and a few points when they are common, so an absolute bound b
    takes s = min(b, 1 - b) clamped to [0.1, 5] points. A relative bound (candidate minus stable) says nothing
    about the rate's level, so it takes one point, or the bound itself when that is larger.
    """
    if relative:
        return min(TAU_MAX, max(TAU_RELATIVE, abs(bound)))
    return min(TAU_MAX, max(TAU_MIN, min(bound, 1 - bound)))


def log_binomial_ratio(x: int, n: int, p0: float, p1: float) -> float:
    """log of Wald's likelihood ratio of p1 against p0 for x events in n trials (0 < p0, p1 < 1)."""
    return x * math.log(p1 / p0) + (n - x) * math.log((1 - p1) / (1 - p0))


def log_mixture_ratio(x: int, n: int, p0: float, scale: float, *, harmful_above: bool = True) -> float:
    """log of the equal-weight mixture of Wald's ratios for alternatives k·scale beyond p0 (k in EFFECTS).

    An alternative that would leave (0, 1) is taken halfway from p0 to the edge instead; any fixed
    alternative on the harmful side keeps the mixture a supermartingale. 0.0 (no evidence) when the null
    covers every rate (p0 at or beyond the edge on the harmful side)."""
    if harmful_above:
        if p0 >= 1:
            return 0.0
        p0 = max(p0, RATE_FLOOR)
        alternatives = [min(p0 + k * scale, (1 + p0) / 2) for k in EFFECTS]
    else:
        if p0 <= 0:
            return 0.0
        p0 = min(p0, 1 - RATE_FLOOR)
        alternatives = [max(p0 - k * scale, p0 / 2) for k in EFFECTS]
    terms = [log_binomial_ratio(x, n, p0, p1) for p1 in alternatives]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms) / len(terms))


def always_valid_p(previous: float, log_ratio: float) -> float:
    """The running always-valid p-value after one more look: min(previous, 1/LR), in [0, 1].

    p never rises: it is 1 / (the largest likelihood ratio seen so far), capped at 1."""
    previous = min(1.0, max(0.0, previous))
    return min(previous, math.exp(-log_ratio)) if log_ratio > 0 else previous


@dataclass(frozen=True)
class RateTest:
    """A candidate's cumulative rate against its bound: the signed effect (candidate - [stable] - bound), how
    much of it points the harmful way, and what the likelihood ratio needs (the counts, the candidate's rate
    at the edge of the null, the tempering weight: 1 against an absolute bound)."""

    effect: float
    harmful: float
    x: int
    n: int
    null_rate: float
    harmful_above: bool
    weight: float = 1.0

    def log_ratio(self, scale: float) -> float:
        return self.weight * log_mixture_ratio(self.x, self.n, self.null_rate, scale, harmful_above=self.harmful_above)

    def p_value(self, previous: float, scale: float) -> float:
        return always_valid_p(previous, self.log_ratio(scale))


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
    null_rate, weight = bound, 1.0
    if stable_n is not None:
        if stable_n <= 0 or stable_x is None:
            return None
        effect -= stable_x / stable_n
        stable_rate = smoothed_rate(stable_x, stable_n)
        null_rate = stable_rate + bound
        at_null = min(1 - RATE_FLOOR, max(RATE_FLOOR, null_rate))
        candidate_variance = at_null * (1 - at_null) / candidate_n
        weight = candidate_variance / (candidate_variance + stable_rate * (1 - stable_rate) / stable_n)
    return RateTest(
        effect=effect,
        harmful=effect if harmful_above else -effect,
        x=candidate_x,
        n=candidate_n,
        null_rate=null_rate,
        harmful_above=harmful_above,
        weight=weight,
    )
