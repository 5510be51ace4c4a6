"""The transformer's HTTP header contract, in one place: names, what a request may ask, what an answer says.

A router in front of the transformer splits traffic between model versions. It names the version in a
request header and reads back, from response headers, which version scored and what it decided, so it
can keep per-version decision rates, score distributions and shadow comparisons without parsing the
JSON body. The README documents these semantics; this module is the code that holds them. Domain code:
no framework, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TypeGuard

from ._errors import InvalidHeader

INFERENCE_ID_HEADER = "x-flywheel-inference-id"
"""Response: the inference id, equal to the body's `inference_id` and the CloudEvents' `ce-id`."""

DEBUG_FEATURES_HEADER = "x-flywheel-debug-features"
"""Request: `1`/`true`/`yes` adds each prediction's exact model input to the body, only when
FLYWHEEL_TRANSFORMER_DEBUG_FEATURES is on and the request carries the transformer debug token."""

MODEL_VERSION_HEADER = "x-flywheel-model-version"
"""Request: serve this published version (`vN`); absent or empty = the version loaded at start.
Response: the version that scored, as the predictor reported it."""

SCORES_HEADER = "x-flywheel-scores"
"""Response: the probabilities in instance order, comma-separated, 6 significant digits."""

DECISIONS_HEADER = "x-flywheel-decisions"
"""Response: the decisions (`approve`/`decline`) in instance order, comma-separated."""

SCORE_HEADERS_MAX_INSTANCES = 256
"""Most instances whose scores and decisions go into headers; a bigger batch gets neither, so a
response's headers stay a few KiB (proxies commonly refuse header blocks of 8-64 KiB)."""

VERSION_PATTERN = re.compile(r"v[0-9]+")
"""A model version as the model repository names them (v1, v2, ...), matched whole (`fullmatch`):
ASCII digits only and no trailing newline, both of which a `^v<digits>$` regex with `match` lets through."""


def is_version(value: str | None) -> TypeGuard[str]:
    """True for a well-formed version name; anything else never becomes a header or a metric label."""
    return value is not None and VERSION_PATTERN.fullmatch(value) is not None


def debug_features_requested(headers: Mapping[str, str]) -> bool:
    """Whether a request asks for its model input back (headers with lower-case names); see DEBUG_FEATURES_HEADER
    for who gets it."""
    return headers.get(DEBUG_FEATURES_HEADER, "").strip().lower() in {"1", "true", "yes"}


def requested_version(headers: Mapping[str, str]) -> str | None:
    """The version a request asks for (headers with lower-case names), None when it asks for none."""
    value = headers.get(MODEL_VERSION_HEADER, "").strip()
    if not value:
        return None
    if not is_version(value):
        raise InvalidHeader(
            f"{value[:40]!r} is not a model version: send v<number> (e.g. v2), or omit the header for the "
            "version this transformer loaded at start",
            header=MODEL_VERSION_HEADER,
        )
    return value


def answer_headers(
    inference_id: str, version: str | None, probabilities: Sequence[float], decisions: Sequence[str]
) -> dict[str, str]:
    """The response headers of a scored request (see the constants above for each one's meaning)."""
    headers = {INFERENCE_ID_HEADER: inference_id}
    if is_version(version):
        headers[MODEL_VERSION_HEADER] = version
    if len(probabilities) <= SCORE_HEADERS_MAX_INSTANCES:
        headers[SCORES_HEADER] = ",".join(format(p, ".6g") for p in probabilities)
        headers[DECISIONS_HEADER] = ",".join(decisions)
    return headers
