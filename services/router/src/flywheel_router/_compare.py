"""What an answer said (scores and decisions), and how a shadow answer compares with the stable's.

The transformer states its scores and decisions in response headers (x-flywheel-scores,
x-flywheel-decisions) for batches of up to 256 rows, so the router normally reads no body. Without them
(a predictor's V2 answer, a larger batch, another server behind a per-version endpoint) the JSON body is
read once: the transformer's V1 `predictions[*].score/decision`, a predictor's V1 `predictions[[p]]`, or a
V2 `outputs[0].data`. A decision it does not state is `score >= threshold`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeGuard

import orjson

SCORES_HEADER = b"x-flywheel-scores"
DECISIONS_HEADER = b"x-flywheel-decisions"
DECLINE = "decline"


@dataclass(frozen=True, slots=True)
class Outcome:
    """Scores and decline flags of one answer, row by row (empty when the answer could not be read)."""

    scores: tuple[float, ...]
    declines: tuple[bool, ...]


EMPTY = Outcome((), ())


def read_outcome(headers: dict[bytes, bytes], body: bytes, threshold: float) -> Outcome:
    """The answer's scores and decisions, from its headers when it has them, else from its body."""
    scores_header = headers.get(SCORES_HEADER)
    if scores_header is not None:
        scores = _floats(scores_header.split(b","))
        decisions = headers.get(DECISIONS_HEADER)
        if decisions is not None:
            declines = tuple(d.strip() == b"decline" for d in decisions.split(b","))
            if len(declines) == len(scores):
                return Outcome(scores, declines)
        return Outcome(scores, tuple(s >= threshold for s in scores))
    return _from_body(body, threshold)


def _floats(parts: list[bytes]) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in parts if p.strip())
    except ValueError:
        return ()
    return values if all(math.isfinite(v) for v in values) else ()


def _from_body(body: bytes, threshold: float) -> Outcome:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return EMPTY
    if not isinstance(doc, dict):
        return EMPTY
    predictions = doc.get("predictions")
    if isinstance(predictions, list):
        scores, declines = [], []
        for p in predictions:
            if isinstance(p, dict):  # the transformer's V1 answer
                score, decision = p.get("score"), p.get("decision")
            elif isinstance(p, list) and len(p) == 1:  # a predictor's V1 answer
                score, decision = p[0], None
            else:
                score, decision = p, None
            if not _number(score):
                return EMPTY
            scores.append(float(score))
            declines.append(decision == DECLINE if isinstance(decision, str) else score >= threshold)
        return Outcome(tuple(scores), tuple(declines))
    outputs = doc.get("outputs")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        data = outputs[0].get("data")
        if isinstance(data, list) and all(_number(v) for v in data):
            return Outcome(tuple(float(v) for v in data), tuple(v >= threshold for v in data))
    return EMPTY


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A stable answer and its shadow, row by row."""

    predictions: int
    mismatches: int
    score_diffs: tuple[float, ...]


def compare(stable: Outcome, candidate: Outcome) -> Comparison | None:
    """Row-by-row agreement; None when either side could not be read or the row counts differ."""
    n = len(stable.scores)
    if n == 0 or len(candidate.scores) != n:
        return None
    mismatches = sum(a != b for a, b in zip(stable.declines, candidate.declines, strict=True))
    diffs = tuple(abs(a - b) for a, b in zip(stable.scores, candidate.scores, strict=True))
    return Comparison(n, mismatches, diffs)
