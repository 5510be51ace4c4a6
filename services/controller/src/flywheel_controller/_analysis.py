"""Judges one analysis interval: a verdict per metric, a verdict for the run, and the evidence to carry on.

`evidence: Sequential` (the default): counts (errors of requests, declines of predictions, latencies surely
above a bound of requests) accumulate across intervals in status.evidence, and an always-valid p-value
(_stats) decides. One interval whose cumulative evidence reaches alpha fails the candidate decisively, while
the chance of ever failing a candidate that is within its bound stays <= alpha over the whole rollout. alpha is
split evenly (Bonferroni) over the spec's router metrics, the ones with statistics, so that this holds for the
rollout and not per metric.

`evidence: Interval`: the fixed-threshold rule of Argo Rollouts and Flagger, kept as the baseline it is
benchmarked against (bench/controller/decisions.py): each interval's own value against the bound, no
statistics, failing after failureLimit failed intervals in a row. Evidence is still carried, so status looks
the same either way.

A latency quantile becomes a rate: H0 "the candidate's q-quantile <= b" means at most 1 - q of its requests
are slower than b, and a request in a bucket whose LOWER edge is >= b is surely slower than b. Buckets that
straddle b count as not slower, so histogram coarseness costs power, never false rollbacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from flywheel_contracts import AnalysisRun, AnalysisSpec, EvidenceState, Histogram, MetricResult, MetricSpec, Verdict

from ._stats import RateTest, always_valid_p, mixture_scale, rate_test
from ._types import AnalysisResult, Counts, Observation

NO_OBSERVATION = "no observation for this metric this interval"
NO_STABLE = "the stable took no traffic this interval: nothing to compare with"

_RUN_ORDER = (Verdict.FAILED, Verdict.INCONCLUSIVE, Verdict.INSUFFICIENT_SAMPLES)


@dataclass(frozen=True)
class _Judged:
    result: MetricResult
    evidence: EvidenceState | None  # None: this metric keeps no evidence
    decisive: bool = False


@dataclass(frozen=True)
class _Context:
    sequential: bool
    threshold: float  # the p-value at or below which a metric fails (alpha over the statistical metrics)
    min_samples: int


def analyse(
    spec: AnalysisSpec,
    observations: list[Observation],
    evidence: list[EvidenceState],
    *,
    now: datetime,
    step: int | None,
    previous: AnalysisRun | None,
) -> AnalysisResult:
    """One interval's analysis. `evidence` is status.evidence as carried so far; `previous` the last run (for
    the consecutive counters). Returns one EvidenceState per metric with statistics, in spec order, followed by
    any carried entries for names no longer in the spec, untouched."""
    statistical = sum(1 for metric in spec.metrics if metric.provider == "router")
    context = _Context(
        sequential=spec.evidence == "Sequential",
        threshold=spec.alpha / max(1, statistical),
        min_samples=spec.min_samples,
    )
    observed = {observation.name: observation for observation in observations}
    carried = {state.name: state for state in evidence}
    judged = [_judge(metric, observed.get(metric.name), carried.get(metric.name), context) for metric in spec.metrics]

    verdicts = {j.result.verdict for j in judged}
    verdict = next((v for v in _RUN_ORDER if v in verdicts), Verdict.SUCCESSFUL)
    failures = previous.consecutive_failures if previous else 0
    inconclusive = previous.consecutive_inconclusive if previous else 0
    run = AnalysisRun(
        time=now,
        step=step,
        verdict=verdict,
        consecutive_failures=failures + 1 if verdict is Verdict.FAILED else 0,
        consecutive_inconclusive=(
            inconclusive + 1 if verdict in (Verdict.INCONCLUSIVE, Verdict.INSUFFICIENT_SAMPLES) else 0
        ),
        decisive=any(j.decisive for j in judged),
        metrics=[j.result for j in judged],
    )
    names = {metric.name for metric in spec.metrics}
    kept = [j.evidence for j in judged if j.evidence is not None]
    kept += [state for state in evidence if state.name not in names]
    return AnalysisResult(run=run, evidence=kept)


def _judge(
    metric: MetricSpec, observation: Observation | None, state: EvidenceState | None, context: _Context
) -> _Judged:
    if observation is None:
        return _Judged(MetricResult(name=metric.name, verdict=Verdict.INCONCLUSIVE, message=NO_OBSERVATION), state)
    if observation.error is not None:
        return _inconclusive(metric, observation, state, observation.error)
    if observation.kind == "value":
        return _judge_value(metric, observation, state)
    if observation.kind == "quantile":
        return _judge_quantile(metric, observation, state, context)
    return _judge_proportion(metric, observation, state, context)


def _inconclusive(metric: MetricSpec, observation: Observation, state: EvidenceState | None, message: str) -> _Judged:
    result = MetricResult(
        name=metric.name,
        verdict=Verdict.INCONCLUSIVE,
        samples=observation.samples,
        stable_samples=observation.stable.n if observation.stable else 0,
        message=message,
    )
    return _Judged(result, state)


def _beyond(value: float, metric: MetricSpec) -> bool:
    return (metric.max is not None and value > metric.max) or (metric.min is not None and value < metric.min)


def _bounds(metric: MetricSpec) -> str:
    parts = [] if metric.min is None else [f"min {metric.min:g}"]
    return ", ".join(parts + ([] if metric.max is None else [f"max {metric.max:g}"]))


# ------------------------------------------------------------------------------------------------ value


def _judge_value(metric: MetricSpec, observation: Observation, state: EvidenceState | None) -> _Judged:
    """A single number (drift share, a PromQL result): against min/max, no statistics, never decisive."""
    value, stable = observation.value, observation.stable_value
    if value is None:
        return _inconclusive(metric, observation, state, "the provider returned no value")
    if metric.relative_to_stable:
        if stable is None:
            return _inconclusive(metric, observation, state, "no stable value to compare with")
        value -= stable
    beyond = _beyond(value, metric)
    shown = f"{metric.name} {value:+.4g} vs stable" if metric.relative_to_stable else f"{metric.name} {value:.4g}"
    result = MetricResult(
        name=metric.name,
        verdict=Verdict.FAILED if beyond else Verdict.SUCCESSFUL,
        value=value,
        stable_value=stable,
        samples=observation.samples,
        message=f"{shown} ({'outside' if beyond else 'within'} {_bounds(metric)})",
    )
    return _Judged(result, state)


# ------------------------------------------------------------------------------------------- proportion


def _pct(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    return f"{100 * rate:.1f}%" if abs(rate) >= 0.01 or rate == 0 else f"{100 * rate:.2f}%"


def _accumulate(state: EvidenceState | None, name: str, candidate: Counts, stable: Counts | None) -> EvidenceState:
    state = state or EvidenceState(name=name)
    return state.model_copy(
        update={
            "intervals": state.intervals + 1,
            "candidate_n": state.candidate_n + candidate.n,
            "candidate_x": state.candidate_x + candidate.x,
            "stable_n": state.stable_n + (stable.n if stable else 0),
            "stable_x": state.stable_x + (stable.x if stable else 0),
        }
    )


def _test(
    state: EvidenceState, bound_max: float | None, bound_min: float | None, *, relative: bool
) -> tuple[float | None, float]:
    """(cumulative effect, running always-valid p) for one side or both sides of a band.

    A band's two one-sided likelihood ratios are averaged, not maximised: the average of two test
    supermartingales is one, so a band keeps alpha too (at the price of a factor 2 in evidence)."""
    sides: list[tuple[RateTest, float]] = []
    for bound, above in ((bound_max, True), (bound_min, False)):
        if bound is None:
            continue
        test = rate_test(
            state.candidate_x,
            state.candidate_n,
            bound,
            stable_x=state.stable_x if relative else None,
            stable_n=state.stable_n if relative else None,
            harmful_above=above,
        )
        if test is not None:
            sides.append((test, mixture_scale(bound, relative=relative)))
    if not sides:
        return None, state.p_value
    logs = [test.log_ratio(scale) for test, scale in sides]
    top = max(logs)
    p = always_valid_p(state.p_value, top + math.log(sum(math.exp(v - top) for v in logs) / len(logs)))
    # the effect shown is the side pointing the harmful way, if any (a band is broken on at most one side)
    shown = max(sides, key=lambda side: side[0].harmful)[0]
    return shown.effect, p


def _verdict(beyond: bool, p: float, samples: int, context: _Context) -> tuple[Verdict, bool]:
    """(verdict, decisive) once the figures are in."""
    if context.sequential:
        if p <= context.threshold:
            return Verdict.FAILED, True
    elif beyond:
        return Verdict.FAILED, False
    if samples < context.min_samples:
        return Verdict.INSUFFICIENT_SAMPLES, False
    return Verdict.SUCCESSFUL, False


def _judge_proportion(
    metric: MetricSpec, observation: Observation, state: EvidenceState | None, context: _Context
) -> _Judged:
    candidate = observation.candidate or Counts(n=0, x=0)
    stable = observation.stable if observation.stable is not None and observation.stable.n > 0 else None
    relative = metric.relative_to_stable
    if relative and stable is None:
        return _inconclusive(metric, observation, state, NO_STABLE)
    state = _accumulate(state, metric.name, candidate, stable)
    effect, p = _test(state, metric.max, metric.min, relative=relative)
    state = state.model_copy(update={"p_value": p})

    rate, stable_rate = candidate.rate, stable.rate if stable else None
    value = None if rate is None else rate - stable_rate if relative and stable_rate is not None else rate
    verdict, decisive = _verdict(value is not None and _beyond(value, metric), p, candidate.n, context)
    shown = f"{metric.name} {_pct(rate)}"
    if stable_rate is not None:
        shown += f" vs stable {_pct(stable_rate)}"
        if relative and value is not None:
            shown += f", {100 * value:+.1f} points"
    shown += f" ({_bounds(metric)})" if not relative else f" (bound {_bound_points(metric)})"
    result = MetricResult(
        name=metric.name,
        verdict=verdict,
        value=value,
        stable_value=stable_rate,
        samples=candidate.n,
        stable_samples=stable.n if stable else 0,
        effect=effect,
        p_value=p,
        message=_with_p(shown, p, context),
    )
    return _Judged(result, state, decisive)


def _bound_points(metric: MetricSpec) -> str:
    parts = [] if metric.min is None else [f"{100 * metric.min:+.1f}"]
    return "..".join(parts + ([] if metric.max is None else [f"{100 * metric.max:+.1f}"])) + " points"


def _with_p(shown: str, p: float, context: _Context) -> str:
    if not context.sequential:
        return shown
    return f"{shown}, p={p:.2g} (always valid; fails at {context.threshold:.2g})"


# --------------------------------------------------------------------------------------------- quantile


def _upper_quantile(histogram: Histogram | None, q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile; inf in the +Inf bucket, None when empty."""
    if histogram is None or histogram.count <= 0:
        return None
    found = histogram.quantile(q)
    return math.inf if found is None else found


def _slower_than(histogram: Histogram | None, bound: float) -> Counts:
    """Requests in buckets whose lower edge is >= bound (surely slower than it), of all requests."""
    if histogram is None:
        return Counts(n=0, x=0)
    lower = [0.0, *(edge if edge is not None else math.inf for edge in histogram.le[:-1])]
    slow = sum(count for edge, count in zip(lower, histogram.counts, strict=True) if edge >= bound)
    return Counts(n=sum(histogram.counts), x=slow)


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "above the largest bucket" if math.isinf(value) else f"{value:g}s"


def _judge_quantile(
    metric: MetricSpec, observation: Observation, state: EvidenceState | None, context: _Context
) -> _Judged:
    q = observation.quantile
    label = f"p{100 * q:g}"
    if metric.max is None or metric.min is not None:
        return _inconclusive(metric, observation, state, f"a latency quantile ({label}) is judged against max only")
    candidate_q = _upper_quantile(observation.candidate_histogram, q)
    stable_q = _upper_quantile(observation.stable_histogram, q)
    samples = observation.candidate_histogram.count if observation.candidate_histogram else 0
    stable_samples = observation.stable_histogram.count if observation.stable_histogram else 0
    if metric.relative_to_stable:
        if stable_q is None:
            return _inconclusive(metric, observation, state, NO_STABLE)
        if math.isinf(stable_q):
            return _inconclusive(metric, observation, state, f"the stable's {label} is above the largest bucket")
        bound = stable_q + metric.max
    else:
        bound = metric.max

    slow = _slower_than(observation.candidate_histogram, bound)
    state = _accumulate(state, metric.name, slow, _slower_than(observation.stable_histogram, bound))
    effect, p = _test(state, 1 - q, None, relative=False)
    state = state.model_copy(update={"p_value": p})

    value: float | None = candidate_q
    if candidate_q is not None and metric.relative_to_stable and stable_q is not None:
        value = candidate_q - stable_q
    beyond = value is not None and value > metric.max
    verdict, decisive = _verdict(beyond, p, samples, context)
    shown = f"{metric.name} {label} {_seconds(candidate_q)}"
    if stable_q is not None:
        shown += f" vs stable {_seconds(stable_q)}"
    shown += f"; {_pct(slow.rate)} of requests surely slower than {bound:g}s (at most {_pct(1 - q)} allowed)"
    result = MetricResult(
        name=metric.name,
        verdict=verdict,
        value=None if value is None or math.isinf(value) else value,
        stable_value=stable_q if stable_q is not None and not math.isinf(stable_q) else None,
        samples=samples,
        stable_samples=stable_samples,
        effect=effect,
        p_value=p,
        message=_with_p(shown, p, context),
    )
    return _Judged(result, state, decisive)
