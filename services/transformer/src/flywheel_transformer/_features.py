"""Adapter to Feast's feature server: one `POST /get-online-features` per request, for all its instances.

Feast (0.67, `feast serve`) answers column-wise: `metadata.feature_names` lists the entity keys and the
features, and `results[j]` holds, for feature j, `values[i]` and `statuses[i]` for entity row i. A value
is usable only when its status is PRESENT and it is a number; anything else (NOT_FOUND for an unknown
card, OUTSIDE_MAX_AGE past the view's ttl, null) is reported as missing with its reason
(`MissingReason`), and the caller substitutes the model's training default. A value stamped more than its
view's ttl before the transaction is OUTSIDE_MAX_AGE here too, judged against the transaction's time as
training's point-in-time join judges it (`flywheel_core.schema.FEATURE_TTL_S`): the online store keeps the
last row it was given however old, so a merchant snapshot the batch job stopped refreshing would otherwise be
served as current while training reads it as missing. Any failure of the lookup
itself becomes FeaturesUnavailable with a bounded `reason` (timeout, unreachable, http_error,
unauthorized, bad_response) for metrics. Its message, which the caller gets, names neither the feature
service's address nor its reply; those go to the log, once per outage (the metrics count every failure).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

from flywheel_contracts.auth import TokenFile
from flywheel_core.schema import FEATURE_TTL_S, ONLINE_FEATURE_REFS

from ._errors import FeaturesUnavailable
from ._outage import OutageLog
from ._scoring import ONLINE_FEATURES, MissingReason, MissingReasons, OnlineLookup, OnlineValues
from ._transport import DirectClient
from ._validation import Transaction

log = logging.getLogger("flywheel_transformer.features")

PRESENT = "PRESENT"
STATUS_REASONS = {"NOT_FOUND": MissingReason.NOT_FOUND, "OUTSIDE_MAX_AGE": MissingReason.OUTSIDE_MAX_AGE}
"""Feast statuses that name why a value is missing; any other (NULL_VALUE, INVALID) is NULL_VALUE."""
KEEP_ALIVE = httpx.Limits(max_connections=100, max_keepalive_connections=100)
"""Keep every connection of a burst alive: reconnecting per request costs more than the lookup."""


def lookup_body(transactions: Sequence[Transaction]) -> dict[str, Any]:
    """The Feast request for all instances: one entity row per transaction, in order."""
    return {
        "features": list(ONLINE_FEATURE_REFS),
        "entities": {
            "card_id": [t.card_id for t in transactions],
            "merchant_id": [t.merchant_id for t in transactions],
        },
        "full_feature_names": False,
    }


def parse_lookup(body: Any, rows: int, event_times: Sequence[datetime] | None = None) -> OnlineLookup:
    """Per-instance online values (and why any is missing) from Feast's column-wise answer; raises
    FeaturesUnavailable if unusable. With `event_times` (row i's transaction time, timezone-aware), values older
    than their view's ttl before it are missing as OUTSIDE_MAX_AGE."""
    try:
        names = body["metadata"]["feature_names"]
        if isinstance(names, dict):  # protobuf's JSON form without Feast's patch: {"val": [...]}
            names = names["val"]
        results = body["results"]
        if not isinstance(names, list) or not isinstance(results, list) or len(names) != len(results):
            raise TypeError("feature_names and results differ in length")
    except (KeyError, TypeError) as e:
        raise _bad_response(f"unexpected shape ({e})") from e
    columns: dict[str, dict[str, Any]] = {}
    for name, result in zip(names, results, strict=True):
        bare = str(name).split("__", 1)[-1]  # full_feature_names form is "<view>__<feature>"
        if bare in ONLINE_FEATURES:
            if not isinstance(result, dict) or not isinstance(result.get("values"), list):
                raise _bad_response(f"feature '{name}' has no values list")
            if len(result["values"]) != rows:
                raise _bad_response(f"feature '{name}' has {len(result['values'])} values for {rows} entity rows")
            columns[bare] = result
    out: list[OnlineValues] = [{} for _ in range(rows)]
    reasons: list[MissingReasons] = [{} for _ in range(rows)]
    stamps: dict[str, float | None] = {}
    """Parsed event timestamps (a batch's rows share a few: one per card or merchant row)."""
    for name in ONLINE_FEATURES:
        column = columns.get(name)
        statuses = column.get("statuses") if column else None
        for i in range(rows):
            if column is None:
                out[i][name] = None
                reasons[i][name] = MissingReason.NULL_VALUE
                continue
            status = statuses[i] if isinstance(statuses, list) and i < len(statuses) else PRESENT
            if status == PRESENT and column["values"][i] is None and _epoch(column, i):
                status = "NOT_FOUND"  # Feast 0.67's Redis store: an unknown entity comes back PRESENT, null, at 1970
            if (
                status == PRESENT
                and event_times is not None
                and _expired(column, i, event_times[i], FEATURE_TTL_S[name], stamps)
            ):
                status = "OUTSIDE_MAX_AGE"
            value = _number(column["values"][i]) if status == PRESENT else None
            out[i][name] = value
            if value is None:
                reasons[i][name] = STATUS_REASONS.get(str(status), MissingReason.NULL_VALUE)
    return OnlineLookup(values=out, reasons=reasons)


def _epoch(column: dict[str, Any], i: int) -> bool:
    """Whether row i's event timestamp is the Unix epoch: no row was ever written for the entity. (Feast's Redis
    online store answers PRESENT with a null value for an entity it does not know, where SQLite answers NOT_FOUND;
    tests/integration/test_redis_online_store.py pins that difference.)"""
    stamps = column.get("event_timestamps")
    return isinstance(stamps, list) and i < len(stamps) and str(stamps[i]).startswith("1970-01-01T00:00:00")


def _expired(column: dict[str, Any], i: int, event_time: datetime, ttl_s: int, parsed: dict[str, float | None]) -> bool:
    """Whether row i's value is stamped more than `ttl_s` before `event_time` (an unreadable stamp is not)."""
    stamps = column.get("event_timestamps")
    if not isinstance(stamps, list) or i >= len(stamps) or not isinstance(stamps[i], str):
        return False
    text = stamps[i]
    if text not in parsed:
        try:
            stamp = datetime.fromisoformat(text)
            parsed[text] = stamp.timestamp() if stamp.tzinfo else None
        except ValueError:
            parsed[text] = None
    stamp_s = parsed[text]
    return stamp_s is not None and stamp_s < event_time.timestamp() - ttl_s


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # int64 may arrive as a JSON string from protobuf's encoder
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _bad_response(detail: str) -> FeaturesUnavailable:
    return FeaturesUnavailable(
        f"the feature service is unavailable: its /get-online-features answer is unusable ({detail})",
        reason="bad_response",
    )


class _UpstreamReply(Exception):
    """What the feature service answered, for the log only (never in the caller's answer)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"POST {response.request.url} answered {response.status_code}: {response.text[:300]}")


class FeatureClient:
    """Shared keep-alive client to the feature server."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        token: TokenFile | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.token = token or TokenFile(None)
        """The features read token sent with every lookup (re-read when its file changes); none when unset."""
        self._outage = OutageLog(log, f"feature lookups at {self.base_url}")
        self._client = DirectClient(
            self.base_url, timeout_s, transport or httpx.AsyncHTTPTransport(verify=verify, limits=KEEP_ALIVE)
        )

    async def lookup(self, transactions: Sequence[Transaction]) -> OnlineLookup:
        try:
            result = await self._lookup(transactions)
        except FeaturesUnavailable as e:
            self._outage.failed(e)
            raise
        self._outage.succeeded()
        return result

    async def _lookup(self, transactions: Sequence[Transaction]) -> OnlineLookup:
        hint = "retry later, or set FLYWHEEL_TRANSFORMER_FEATURES_FALLBACK=defaults to score with training defaults"
        try:
            response = await self._client.post_json(
                "/get-online-features", lookup_body(transactions), headers=self.token.header()
            )
        except httpx.TimeoutException as e:
            raise FeaturesUnavailable(
                f"the feature service is unavailable: no answer within {self.timeout_s:g} s "
                f"(FLYWHEEL_TRANSFORMER_FEATURES_TIMEOUT_S); {hint}",
                reason="timeout",
            ) from e
        except httpx.TransportError as e:
            raise FeaturesUnavailable(
                f"the feature service is unavailable: cannot reach it ({type(e).__name__}); {hint}",
                reason="unreachable",
            ) from e
        if response.status_code in (401, 403):
            # This service's credentials, not the caller's request: a configuration fault to fix.
            raise FeaturesUnavailable(
                f"the feature service is unavailable: it refused this transformer's credentials "
                f"({response.status_code} unauthorized); set FLYWHEEL_TRANSFORMER_FEATURES_TOKEN_FILE to a file "
                "holding the features read token",
                reason="unauthorized",
            )
        if response.status_code != 200:
            raise FeaturesUnavailable(
                f"the feature service is unavailable: it answered {response.status_code}; {hint}",
                reason="http_error",
            ) from _UpstreamReply(response)
        try:
            body = response.json()
        except ValueError as e:
            raise _bad_response("not JSON") from e
        return parse_lookup(body, len(transactions), [t.event_timestamp for t in transactions])

    async def aclose(self) -> None:
        await self._client.aclose()
