"""Builders shared by the transformer's tests: transactions, a published model version, Feast answers."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from flywheel_core import model_repo, schema

T = TypeVar("T")

ONLINE_NAMES = [ref.split(":", 1)[1] for ref in schema.ONLINE_FEATURE_REFS]
DEFAULTS = {name: float(i + 1) * 10.0 for i, name in enumerate(schema.NUMERIC_FEATURES)}
"""Training defaults of the test model: distinct per feature, so a test can tell which one was used."""
V2_DEFAULTS = {name: float(i + 1) * 100.0 for i, name in enumerate(schema.NUMERIC_FEATURES)}
"""Training defaults of the second published version (`two_versions`): every one differs from DEFAULTS."""


RECENT_STAMP = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%dT03:15:00Z")
"""Yesterday 03:15 UTC (a night hour): the transformer refuses stamps from the future or over a year old, so a
fixed date in the builders would make the suite fail once it aged."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def transaction(**overrides: Any) -> dict[str, Any]:
    """A valid raw transaction as a client sends it."""
    base = {
        "transaction_id": "t0000000001",
        "card_id": "c000001",
        "merchant_id": "m00001",
        "amount": 42.5,
        "currency": "EUR",
        "country": "DE",
        "merchant_category": "grocery",
        "channel": "pos",
        "event_timestamp": RECENT_STAMP,
    }
    base.update(overrides)
    return base


def metadata(**overrides: Any) -> dict[str, Any]:
    """metadata.json content of a version as docs/architecture.md lays it out (publish fills the rest)."""
    meta = {
        "created_at": "2026-11-23T12:00:00Z",
        "feature_service": schema.FEATURE_SERVICE,
        "input": {"name": "input", "datatype": "FP32", "shape": [-1, schema.INPUT_DIM], "columns": schema.COLUMNS},
        "output": {"name": "probability", "datatype": "FP32", "shape": [-1, 1]},
        "defaults": DEFAULTS,
        "variants": {"fp32": {"file": "model.fp32.onnx", "published": True, "gate": {}}},
        "metrics": {},
        "slices": {},
        "lineage": {},
    }
    meta.update(overrides)
    return meta


def publish_version(repo: Path, model: str = "fraud", **overrides: Any) -> Path:
    """Publish a version through flywheel_core.model_repo, as the trainer does (the ONNX file is a stand-in)."""
    staging = model_repo.staging_path(repo, model)
    (staging / "model.fp32.onnx").write_bytes(b"stand-in: the transformer never opens the model file")
    return model_repo.publish(staging, repo, model, metadata(**overrides))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "model_repo"
    publish_version(root)
    return root


@pytest.fixture
def two_versions(tmp_path: Path) -> Path:
    """A repository with v1 (DEFAULTS) and v2 (V2_DEFAULTS) of `fraud`."""
    root = tmp_path / "model_repo"
    publish_version(root)
    publish_version(root, defaults=V2_DEFAULTS)
    return root


def feast_answer(
    card_ids: Sequence[str],
    merchant_ids: Sequence[str],
    values: Mapping[str, Sequence[Any]],
    statuses: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """A Feast 0.67 /get-online-features answer: column-wise, entity keys first, full_feature_names off."""
    names = ["card_id", "merchant_id", *ONLINE_NAMES]
    results = [
        {"values": list(card_ids), "statuses": ["PRESENT"] * len(card_ids), "event_timestamps": []},
        {"values": list(merchant_ids), "statuses": ["PRESENT"] * len(merchant_ids), "event_timestamps": []},
    ]
    for name in ONLINE_NAMES:
        column = list(values[name])
        status = list((statuses or {}).get(name) or ["PRESENT" if v is not None else "NOT_FOUND" for v in column])
        results.append({"values": column, "statuses": status, "event_timestamps": []})
    return {"metadata": {"feature_names": names}, "results": results}


def known_values(n: int, base: float = 1.0) -> dict[str, list[float]]:
    """Present online values for n rows: feature k of row i is base * (k + 1) + i."""
    return {name: [base * (k + 1) + i for i in range(n)] for k, name in enumerate(ONLINE_NAMES)}


def feast_transport(handler: Callable[[dict[str, Any]], Any]) -> httpx.MockTransport:
    """A mock feature server: `handler(request_json)` returns the JSON answer, an httpx.Response, or raises."""

    def respond(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/get-online-features"
        result = handler(json.loads(request.content))
        return result if isinstance(result, httpx.Response) else httpx.Response(200, json=result)

    return httpx.MockTransport(respond)


def predictor_transport(
    score: Callable[[list[float]], float] | float = 0.2, version: str | None = "v1"
) -> httpx.MockTransport:
    """A mock V2 predictor: scores each row with `score(row)` (or a constant) and reports `version`."""

    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        tensor = body["inputs"][0]
        rows, width = tensor["shape"]
        data = tensor["data"]
        matrix = [data[i * width : (i + 1) * width] for i in range(rows)]
        scores = [score(row) if callable(score) else score for row in matrix]
        answer: dict[str, Any] = {
            "model_name": "fraud",
            "id": body.get("id"),
            "outputs": [{"name": "probability", "shape": [rows, 1], "datatype": "FP32", "data": scores}],
        }
        if version is not None:
            answer["model_version"] = version
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(respond)


VERSIONED_INFER = re.compile(r"^/v2/models/fraud/versions/([^/]+)/infer$")


def versioned_predictor_transport(
    served: Sequence[str] = ("v1", "v2"),
    current: str = "v1",
    score: Callable[[list[float]], float] | float = 0.2,
    paths: list[str] | None = None,
) -> httpx.MockTransport:
    """A mock V2 predictor serving several versions: `/v2/models/fraud/versions/<v>/infer` answers as `v` when
    it is in `served` (404 otherwise), `/v2/models/fraud/infer` as `current`. Each path is appended to `paths`."""

    def respond(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if paths is not None:
            paths.append(path)
        if path == "/v2/models/fraud/infer":
            return predictor_transport(score, current).handle_request(request)
        match = VERSIONED_INFER.match(path)
        if match is None or match.group(1) not in served:
            return httpx.Response(404, json={"error": f"version not served here; this server serves {list(served)}"})
        return predictor_transport(score, match.group(1)).handle_request(request)

    return httpx.MockTransport(respond)
