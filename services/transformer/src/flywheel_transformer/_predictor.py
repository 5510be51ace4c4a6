"""Adapter to the predictor over the V2 Open Inference Protocol (`POST /v2/models/<model>/infer`).

One shared keep-alive httpx client; the batch goes as one FP32 tensor, row-major and flat as the V2
JSON spec prefers. The answer's `model_version` is what the response reports, because the predictor,
not the transformer, knows which version actually scored. A predictor that is down, slow or not ready
gives 503 (retry later); one that answers with an error or an unusable body gives 502.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ._errors import PredictorBadResponse, PredictorUnavailable

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


class PredictorClient:
    """Shared keep-alive client to the predictor's V2 endpoint."""

    def __init__(
        self, base_url: str, model_name: str, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.path = f"/v2/models/{model_name}/infer"
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, limits=KEEP_ALIVE, transport=transport
        )

    async def infer(self, body: dict[str, Any], output_name: str, rows: int) -> Scores:
        try:
            response = await self._client.post(self.path, json=body)
        except httpx.TimeoutException as e:
            raise PredictorUnavailable(
                f"the predictor did not answer within {self.timeout_s:g} s "
                "(FLYWHEEL_TRANSFORMER_PREDICTOR_TIMEOUT_S): retry later"
            ) from e
        except httpx.TransportError as e:
            raise PredictorUnavailable(
                f"cannot reach the predictor at {self.base_url} ({type(e).__name__}): retry later"
            ) from e
        if response.status_code == 503:
            raise PredictorUnavailable(f"the predictor at {self.base_url} is not ready (503): retry later")
        if response.status_code != 200:
            raise PredictorBadResponse(
                f"the predictor answered {response.status_code} to {self.path}: {response.text[:300]}"
            )
        try:
            payload = response.json()
        except ValueError as e:
            raise PredictorBadResponse("the predictor's response is not JSON") from e
        return parse_infer(payload, output_name, rows)

    async def aclose(self) -> None:
        await self._client.aclose()
