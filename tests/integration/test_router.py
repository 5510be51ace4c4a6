"""The router in front of the real transformer, predictor and feature server, with two real model versions.

v1 is served from the start; v2 is trained and published while the stack runs (the predictor and the
transformer load it on the first request that names it). Routes go through the router's admin API.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import httpx
import pytest

from flywheel_core import schema

from conftest import applied

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from localstack import Service, Stack, default_services, free_port  # noqa: E402


def raw(transaction: dict) -> dict:
    return {key: transaction[key] for key in schema.RAW_TRANSACTION_FIELDS}



class Router:
    """The router's inference and admin ports, with the admin token of the stack."""

    def __init__(self, ports, data_dir: Path) -> None:
        self.base = f"http://127.0.0.1:{ports.router}"
        self.admin = f"http://127.0.0.1:{ports.router_admin}"
        self.auth = {"authorization": f"Bearer {(data_dir / 'router' / 'token').read_text().strip()}"}
        self.client = httpx.Client(timeout=15)

    def put_route(self, **fields: object) -> dict:
        current = self.client.get(f"{self.admin}/v1/routes/fraud", headers=self.auth)
        generation = current.json()["generation"] if current.status_code == 200 else 0
        body = {"stable": {"version": "v1"}, **fields, "generation": generation}
        answer = self.client.put(f"{self.admin}/v1/routes/fraud", json=body, headers=self.auth)
        assert answer.status_code in (200, 201), answer.text
        applied(self.client, self.admin, self.auth, answer.json()["generation"])
        return answer.json()

    def predict(self, transaction: dict, headers: dict | None = None) -> httpx.Response:
        return self.client.post(
            f"{self.base}/v1/models/fraud:predict", json={"instances": [raw(transaction)]}, headers=headers or {}
        )

    def stats(self) -> dict:
        return self.client.get(f"{self.admin}/v1/stats/fraud", headers=self.auth).json()


@pytest.fixture(scope="module")
def router(stack: Stack, ports, data_env, second_version) -> Router:
    router = Router(ports, Path(data_env["FLYWHEEL_DATA_DIR"]))
    yield router
    router.client.close()


def test_the_router_passes_raw_transactions_through_and_names_the_version(router, live_transactions):
    router.put_route()
    response = router.predict(live_transactions[0])
    assert response.status_code == 200, response.text
    assert response.headers["x-flywheel-route"] == "stable" and response.headers["x-flywheel-model-version"] == "v1"
    [prediction] = response.json()["predictions"]
    assert prediction["model_version"] == "v1" and prediction["id"] == live_transactions[0]["transaction_id"]
    assert response.headers["x-flywheel-scores"] and response.headers["x-flywheel-inference-id"]


def test_a_canary_sends_its_share_to_the_candidate_and_each_answer_says_which_version(router, live_transactions):
    router.put_route(candidate={"version": "v2"}, candidateWeight=30)
    n, seen = 200, {"v1": 0, "v2": 0}
    for i in range(n):
        response = router.predict(live_transactions[i % len(live_transactions)])
        assert response.status_code == 200, response.text
        version = response.json()["predictions"][0]["model_version"]
        assert response.headers["x-flywheel-model-version"] == version
        seen[version] += 1
    half_width = 2.576 * math.sqrt(n * 0.3 * 0.7)
    assert abs(seen["v2"] - 0.3 * n) <= half_width, seen
    versions = router.stats()["versions"]
    assert versions["v2"]["role"] == "candidate" and versions["v2"]["predictions"] >= seen["v2"]


def test_blue_green_preview_header_reaches_only_the_candidate(router, live_transactions):
    router.put_route(candidate={"version": "v2"}, previewHeader="x-flywheel-preview")
    for transaction in live_transactions[:10]:
        assert router.predict(transaction).headers["x-flywheel-model-version"] == "v1"
        previewed = router.predict(transaction, {"x-flywheel-preview": "1"})
        assert previewed.json()["predictions"][0]["model_version"] == "v2"


def test_shadow_compares_every_answer_while_callers_only_see_the_stable(router, live_transactions):
    before = router.stats()["shadow"]
    router.put_route(candidate={"version": "v2"}, shadowPercent=100)
    for transaction in live_transactions[:30]:
        response = router.predict(transaction)
        assert response.json()["predictions"][0]["model_version"] == "v1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shadow = router.stats()["shadow"]
        if shadow["compared"] - before.get("compared", 0) >= 30:
            break
        time.sleep(0.2)
    assert shadow["candidateVersion"] == "v2" and shadow["candidateErrors"] == 0
    assert shadow["predictionsCompared"] >= 30 and shadow["scoreDiff"]["count"] >= 30
    assert shadow["scoreDiff"]["sum"] > 0  # v2 was trained differently: its scores differ


def test_a_killed_candidate_costs_callers_nothing_and_is_counted(router, stack, ports, data_env, model_repo,
                                                               live_transactions, workdir):
    # The candidate gets its own transformer process (candidate.endpoint), which is then SIGKILLed.
    candidate_ports = type(ports)(
        features=ports.features, predictor=ports.predictor, transformer=free_port(), drift=ports.drift
    )
    [transformer] = [s for s in default_services(model_repo, Path(data_env["FLYWHEEL_DATA_DIR"]), candidate_ports)
                     if s.name == "transformer"]
    candidate = Service("candidate-transformer", transformer.argv, transformer.env, transformer.ready_url)
    with Stack([candidate], log_dir=workdir / "logs") as extra:
        endpoint = f"http://127.0.0.1:{candidate_ports.transformer}"
        router.put_route(candidate={"version": "v2", "endpoint": endpoint}, candidateWeight=50)
        assert {router.predict(t).headers["x-flywheel-model-version"] for t in live_transactions[:20]} == {"v1", "v2"}
        errors_before = router.stats()["versions"]["v2"]["errors"]
        extra.kill("candidate-transformer")
        answers = [router.predict(t) for t in live_transactions[:40]]
    assert [a.status_code for a in answers] == [200] * 40
    assert {a.headers["x-flywheel-model-version"] for a in answers} == {"v1"}
    assert router.stats()["versions"]["v2"]["errors"] - errors_before >= 10  # about half of 40 were sent to v2


def test_a_killed_router_comes_back_with_the_current_routes_before_it_is_ready(router, stack, live_transactions):
    stored = router.put_route(candidate={"version": "v2"}, candidateWeight=100)
    stack.kill("router")
    stack.restart("router")  # waits for readiness
    got = router.client.get(f"{router.admin}/v1/routes/fraud", headers=router.auth).json()
    assert got["generation"] == stored["generation"]
    assert router.predict(live_transactions[0]).headers["x-flywheel-model-version"] == "v2"


def test_the_admin_api_refuses_callers_without_the_token(router):
    for method, path in (("GET", "/v1/routes"), ("PUT", "/v1/routes/fraud"), ("GET", "/v1/stats/fraud")):
        answer = router.client.request(method, f"{router.admin}{path}", json={"stable": {"version": "v9"}})
        assert answer.status_code == 401
    wrong = router.client.get(f"{router.admin}/v1/routes", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
