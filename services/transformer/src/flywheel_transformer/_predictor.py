"""Adapter to the predictor over the V2 Open Inference Protocol (`POST /v2/models/<model>/infer`, or
`/v2/models/<model>/versions/<version>/infer` when a request names a version).

One shared keep-alive httpx client; the batch goes as one FP32 tensor, row-major and flat as the V2
JSON spec prefers. The answer's `model_version` (else its `x-flywheel-model-version` header) is what the
response reports, because the predictor, not the transformer, knows which version actually scored. A
predictor that is down, slow or not ready gives 503 (retry later); a 404 for a named version gives 404
(that version is not served there); any other error or an unusable body gives 502, and so does an
answer from a version other than the one asked for (its input was built with another version's defaults).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from ._errors import PredictorBadResponse, PredictorUnavailable, VersionNotServed
from ._headers import MODEL_VERSION_HEADER
from ._outage import OutageLog
from ._transport import DirectClient

log = logging.getLogger("flywheel_transformer.predictor")

KEEP_ALIVE = httpx.Limits(max_connections=100, max_keepalive_connections=100)
"""Keep every connection of a burst alive: reconnecting per request costs more than the call."""


@dataclass(frozen=True)
class Scores:
    """The predictor's answer for a batch."""

    probabilities: list[float]
    model_version: str | None
    model_name: str | None


def infer_body(inference_id: str, input_name: str, vectors: Sequence[Sequence[float]]) -> dict[str, Any]:
    width = len(vectors[0]) if vectors else 0
    return {
        "id": inference_id,
        "inputs": [
            {
                "name": input_name,
                "shape": [len(vectors), width],
                "datatype": "FP32",
                "data": [value for row in vectors for value in row],
            }
        ],
    }


def parse_infer(body: Any, output_name: str, rows: int) -> Scores:
    """Scores from a V2 inference response; raises PredictorBadResponse when it cannot be read."""
    try:
        outputs = body["outputs"]
        named = [o for o in outputs if o.get("name") == output_name]
        output = named[0] if named else (outputs[0] if len(outputs) == 1 else None)
        if output is None:
            raise KeyError(f"output '{output_name}'")
        data = _flatten(output["data"])
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise PredictorBadResponse(f"the predictor's V2 response lacks {e}: check the predictor's model") from e
    if len(data) != rows:
        raise PredictorBadResponse(f"the predictor returned {len(data)} scores for {rows} instances")
    scores = []
    for value in data:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PredictorBadResponse(f"the predictor returned a non-numeric score {value!r}")
        scores.append(float(value))
    version = body.get("model_version")
    name = body.get("model_name")
    return Scores(
        probabilities=scores,
        model_version=None if version is None else str(version),
        model_name=None if name is None else str(name),
    )


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise TypeError("output data is not a list")
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


class _UpstreamReply(Exception):
    """What the predictor answered, for the log only (never in the caller's answer)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"POST {response.request.url} answered {response.status_code}: {response.text[:300]}")


class PredictorClient:
    """Shared keep-alive client to the predictor's V2 endpoint."""

    def __init__(
        self,
        base_url: str,
        model_name: str,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.path = f"/v2/models/{model_name}/infer"
        self.timeout_s = timeout_s
        self._client = DirectClient(
            self.base_url, timeout_s, transport or httpx.AsyncHTTPTransport(verify=verify, limits=KEEP_ALIVE)
        )
        self._outage = OutageLog(log, f"predictor calls to {self.base_url}")

    def path_for(self, version: str | None) -> str:
        """The V2 infer path: unversioned (whatever the predictor serves) or for one version."""
        if version is None:
            return self.path
        return f"/v2/models/{self.model_name}/versions/{version}/infer"

    async def infer(self, body: dict[str, Any], output_name: str, rows: int, version: str | None = None) -> Scores:
        """Score a batch with the predictor's current version, or with `version` when one is named.

        Errors say what failed without the predictor's address or reply text (the caller is outside);
        those go to the log, once per outage."""
        try:
            scores = await self._infer(body, output_name, rows, version)
        except (PredictorUnavailable, PredictorBadResponse) as e:
            self._outage.failed(e)
            raise
        self._outage.succeeded()
        return scores

    async def _infer(self, body: dict[str, Any], output_name: str, rows: int, version: str | None) -> Scores:
        path = self.path_for(version)
        try:
            response = await self._client.post_json(path, body)
        except httpx.TimeoutException as e:
            raise PredictorUnavailable(
                f"the predictor did not answer within {self.timeout_s:g} s "
                "(FLYWHEEL_TRANSFORMER_PREDICTOR_TIMEOUT_S): retry later"
            ) from e
        except httpx.TransportError as e:
            raise PredictorUnavailable(f"cannot reach the predictor ({type(e).__name__}): retry later") from e
        if response.status_code == 503:
            raise PredictorUnavailable("the predictor is not ready (503): retry later") from _UpstreamReply(response)
        if response.status_code == 404 and version is not None:
            raise VersionNotServed(
                f"the predictor does not serve model '{self.model_name}' version '{version}' "
                f"(404 from {path}): route to a version the predictor serves",
                version=version,
            ) from _UpstreamReply(response)
        if response.status_code != 200:
            error = PredictorBadResponse(f"the predictor answered {response.status_code} to {path}")
            raise error from _UpstreamReply(response)
        try:
            payload = response.json()
        except ValueError as e:
            raise PredictorBadResponse("the predictor's response is not JSON") from e
        scores = parse_infer(payload, output_name, rows)
        reported = scores.model_version or response.headers.get(MODEL_VERSION_HEADER) or None
        if version is not None and reported is not None and reported != version:
            raise PredictorBadResponse(
                f"the predictor answered {path} with model version '{reported}': its input was built with "
                f"version '{version}' metadata, so the scores are not used; check the predictor's routing"
            )
        return replace(scores, model_version=reported or version)

    async def aclose(self) -> None:
        await self._client.aclose()
