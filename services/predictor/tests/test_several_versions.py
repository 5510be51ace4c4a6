"""Several versions in one predictor, over HTTP against real servers: routes and the version header,
on-demand loads, the repository poll, idle and LRU unloads, and a tampered version.

Each version N of these repositories scores with bias N (tiny_model), so a score says which version
made it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import tiny_model
from conftest import Server, running_server
from tiny_model import DIM, reference

ROWS = np.random.default_rng(17).normal(size=(2, DIM)).astype(np.float32)
HEADER = "x-flywheel-model-version"


def v2_body(rows: np.ndarray = ROWS) -> dict:
    return {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}


def expected(version: str, rows: np.ndarray = ROWS) -> np.ndarray:
    return reference(rows, bias=float(version[1:]))


def publish(repo: Path, version: str) -> None:
    assert tiny_model.model_repo.next_version(repo, "fraud") == version
    tiny_model.publish(repo, bias=float(version[1:]))


def repo_with(tmp_path_factory: pytest.TempPathFactory, *versions: str) -> Path:
    repo = tmp_path_factory.mktemp("model_repo")
    for version in versions:
        publish(repo, version)
    return repo


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def log_lines(server: Server, words: str) -> list[str]:
    return [line for line in server.output().splitlines() if words in line]


def metric(server: Server, sample: str) -> float | None:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


# -- one server, default v1, v2 published after it started ------------------------------------------------


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    repo = repo_with(tmp_path_factory, "v1")
    with running_server(repo, tmp_path_factory.mktemp("logs")) as server:
        publish(repo, "v2")  # MODEL_VERSION=latest was v1 at start-up, and must stay v1
        yield server, repo


@pytest.fixture(scope="module")
def client(two_versions: tuple[Server, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=two_versions[0].url, timeout=10) as http:
        yield http


def test_a_newer_published_version_does_not_take_unrouted_traffic(client: httpx.Client) -> None:
    response = client.post("/v2/models/fraud/infer", json=v2_body())
    assert response.json()["model_version"] == "v1"
    assert response.headers[HEADER] == "v1"
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected("v1").ravel(), rtol=1e-5)
    assert client.get("/v2/models/fraud/ready").json() == {"name": "fraud", "ready": True}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_versioned_v2_infer_scores_with_that_version(client: httpx.Client, version: str) -> None:
    response = client.post(f"/v2/models/fraud/versions/{version}/infer", json=v2_body())
    assert response.status_code == 200, response.text
    assert response.headers[HEADER] == version
    body = response.json()
    assert (body["model_name"], body["model_version"]) == ("fraud", version)
    np.testing.assert_allclose(body["outputs"][0]["data"], expected(version).ravel(), rtol=1e-5)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_versioned_metadata_and_readiness_describe_that_version(client: httpx.Client, version: str) -> None:
    metadata = client.get(f"/v2/models/fraud/versions/{version}").json()
    assert metadata == {
        "name": "fraud",
        "versions": [version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, DIM]}],
        "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1, 1]}],
    }
    assert client.get(f"/v2/models/fraud/versions/{version}/ready").json() == {"name": "fraud", "ready": True}


def test_versioned_infer_takes_post_only(client: httpx.Client) -> None:
    wrong_method = client.get("/v2/models/fraud/versions/v2/infer")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    wrong_method = client.post("/v2/models/fraud/versions/v2/ready")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET"


def test_v1_predict_follows_the_version_header_and_names_the_scorer(client: httpx.Client) -> None:
    for headers, version in [({HEADER: "v2"}, "v2"), ({}, "v1"), ({HEADER: ""}, "v1"), ({HEADER: "v1"}, "v1")]:
        response = client.post("/v1/models/fraud:predict", json={"instances": ROWS.tolist()}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers[HEADER] == version, headers
        np.testing.assert_allclose(response.json()["predictions"], expected(version), rtol=1e-5)


def test_unversioned_v2_infer_follows_the_version_header(client: httpx.Client) -> None:
    response = client.post("/v2/models/fraud/infer", json=v2_body(), headers={HEADER: "v2"})
    assert response.headers[HEADER] == "v2" and response.json()["model_version"] == "v2"
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected("v2").ravel(), rtol=1e-5)


def test_binary_tensor_responses_carry_the_version_header_too(client: httpx.Client) -> None:
    body = {**v2_body(), "parameters": {"binary_data_output": True}}
    response = client.post("/v2/models/fraud/infer", json=body, headers={HEADER: "v2"})
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers[HEADER] == "v2"
    raw = response.content[int(response.headers["inference-header-content-length"]) :]
    np.testing.assert_allclose(np.frombuffer(raw, "<f4"), expected("v2").ravel(), rtol=1e-5)


@pytest.mark.parametrize("value", ["2", "latest", "v2,v1"])
def test_a_malformed_version_header_is_400_naming_the_header(client: httpx.Client, value: str) -> None:
    for path, body in [("/v1/models/fraud:predict", {"instances": ROWS.tolist()}), ("/v2/models/fraud/infer", v2_body())]:
        response = client.post(path, json=body, headers={HEADER: value})
        assert response.status_code == 400
        assert f"header '{HEADER}' has value '{value}'" in response.json()["error"]


def test_a_header_naming_an_unpublished_version_is_404_listing_the_published_ones(client: httpx.Client) -> None:
    response = client.post("/v1/models/fraud:predict", json={"instances": ROWS.tolist()}, headers={HEADER: "v9"})
    assert response.status_code == 404
    assert "'v9'" in response.json()["error"] and "published: v1, v2" in response.json()["error"]


def test_unversioned_metadata_describes_the_default_and_lists_the_loaded_versions(client: httpx.Client) -> None:
    client.post("/v2/models/fraud/versions/v2/infer", json=v2_body())
    metadata = client.get("/v2/models/fraud").json()
    assert metadata["versions"] == ["v1", "v2"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, DIM]}]


def test_metrics_keep_one_series_set_per_loaded_version_and_count_loads(two_versions: tuple[Server, Path], client: httpx.Client) -> None:
    server = two_versions[0]
    client.post("/v2/models/fraud/versions/v2/infer", json=v2_body())
    for version in ("v1", "v2"):
        info = f'flywheel_predictor_model_info{{model="fraud",provider="CPUExecutionProvider",variant="fp32",version="{version}"}}'
        assert metric(server, info) == 1.0
    assert metric(server, 'flywheel_predictor_rows_total{model="fraud",variant="fp32",version="v2"}') >= 2
    assert metric(server, 'flywheel_predictor_loaded_versions{model="fraud"}') >= 2
    assert metric(server, 'flywheel_predictor_version_loads_total{model="fraud",outcome="loaded"}') >= 2


def test_concurrent_first_requests_for_a_new_version_load_it_once(two_versions: tuple[Server, Path]) -> None:
    server, repo = two_versions
    publish(repo, "v3")

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=20) as http:  # a connection each: truly concurrent
            return http.post("/v2/models/fraud/versions/v3/infer", json=v2_body())

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(one, range(12)))
    assert [r.status_code for r in responses] == [200] * 12
    for response in responses:
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected("v3").ravel(), rtol=1e-5)
    (line,) = log_lines(server, "loaded model=fraud version=v3 ")
    assert "on demand" in line and " ms;" in line


def test_requests_to_a_loaded_version_log_nothing(two_versions: tuple[Server, Path], client: httpx.Client) -> None:
    server = two_versions[0]
    client.post("/v2/models/fraud/versions/v2/infer", json=v2_body())
    before = server.output().count("\n")
    for _ in range(5):
        client.post("/v2/models/fraud/versions/v2/infer", json=v2_body())
        client.post("/v1/models/fraud:predict", json={"instances": ROWS.tolist()}, headers={HEADER: "v2"})
        client.post("/v1/models/fraud:predict", json={"instances": ROWS.tolist()}, headers={HEADER: "v9"})
    assert server.output().count("\n") == before


# -- VERSIONS=all: the poll loads what is published ---------------------------------------------------------


def test_with_versions_all_a_version_published_later_is_loaded_without_a_request(tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = repo_with(tmp_path_factory, "v1", "v2")
    settings = {
        "FLYWHEEL_PREDICTOR_MODEL_VERSION": "v1",
        "FLYWHEEL_PREDICTOR_VERSIONS": "all",
        "FLYWHEEL_PREDICTOR_REPO_POLL_INTERVAL_S": "0.2",
    }
    with running_server(repo, tmp_path_factory.mktemp("logs"), settings) as server:
        (line,) = log_lines(server, "loaded model=fraud version=v2 ")
        assert "(published, VERSIONS=all)" in line
        publish(repo, "v3")
        wait_for(lambda: bool(log_lines(server, "loaded model=fraud version=v3 ")), "the poll to load v3")
        (line,) = log_lines(server, "loaded model=fraud version=v3 ")
        assert "(published while running, VERSIONS=all)" in line
        assert httpx.get(f"{server.url}/v2/models/fraud").json()["versions"] == ["v1", "v2", "v3"]
        response = httpx.post(f"{server.url}/v2/models/fraud/infer", json=v2_body())
        assert response.headers[HEADER] == "v1"
        response = httpx.post(f"{server.url}/v2/models/fraud/versions/v3/infer", json=v2_body())
        np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected("v3").ravel(), rtol=1e-5)


# -- unloading: idle, and least recently used under the bound -----------------------------------------------


def test_an_idle_version_is_unloaded_and_its_series_retired(tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = repo_with(tmp_path_factory, "v1", "v2")
    settings = {
        "FLYWHEEL_PREDICTOR_MODEL_VERSION": "v1",
        "FLYWHEEL_PREDICTOR_UNLOAD_IDLE_S": "1",
        "FLYWHEEL_PREDICTOR_REPO_POLL_INTERVAL_S": "0.2",
    }
    info = 'flywheel_predictor_model_info{model="fraud",provider="CPUExecutionProvider",variant="fp32",version="v2"}'
    with running_server(repo, tmp_path_factory.mktemp("logs"), settings) as server:
        assert httpx.post(f"{server.url}/v2/models/fraud/versions/v2/infer", json=v2_body()).status_code == 200
        assert metric(server, info) == 1.0
        wait_for(lambda: bool(log_lines(server, "unloaded model=fraud version=v2 ")), "v2 to be unloaded")
        (line,) = log_lines(server, "unloaded model=fraud version=v2 ")
        assert "UNLOAD_IDLE_S=1" in line
        assert metric(server, info) is None
        assert metric(server, 'flywheel_predictor_rows_total{model="fraud",variant="fp32",version="v2"}') is None
        assert metric(server, 'flywheel_predictor_loaded_versions{model="fraud"}') == 1.0
        assert metric(server, 'flywheel_predictor_version_loads_total{model="fraud",outcome="unloaded"}') == 1.0
        # The default is never idle-unloaded: the sweep that unloaded v2 looked at v1 too, idle longer still
        # (loaded at start, never asked for since), and kept it.
        assert log_lines(server, "unloaded model=fraud version=v1 ") == []
        assert httpx.get(f"{server.url}/v2/models/fraud").json()["versions"] == ["v1"]
        # ... and v2 comes back on the next request naming it
        response = httpx.post(f"{server.url}/v1/models/fraud:predict", json={"instances": ROWS.tolist()}, headers={HEADER: "v2"})
        np.testing.assert_allclose(response.json()["predictions"], expected("v2"), rtol=1e-5)


def test_past_the_bound_the_least_recently_used_version_makes_room(tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = repo_with(tmp_path_factory, "v1", "v2", "v3")
    settings = {
        "FLYWHEEL_PREDICTOR_MODEL_VERSION": "v1",
        "FLYWHEEL_PREDICTOR_MAX_LOADED_VERSIONS": "2",
        "FLYWHEEL_PREDICTOR_UNLOAD_IDLE_S": "0",
    }
    with running_server(repo, tmp_path_factory.mktemp("logs"), settings) as server:
        for version in ("v2", "v3"):
            response = httpx.post(f"{server.url}/v2/models/fraud/versions/{version}/infer", json=v2_body())
            np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected(version).ravel(), rtol=1e-5)
        (line,) = log_lines(server, "unloaded model=fraud version=v2 ")
        assert "least recently used, making room for v3 under MAX_LOADED_VERSIONS=2" in line
        assert httpx.get(f"{server.url}/v2/models/fraud").json()["versions"] == ["v1", "v3"]


# -- a tampered version --------------------------------------------------------------------------------------


def test_a_tampered_version_gets_a_clear_503_logged_once_while_the_default_keeps_serving(tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = repo_with(tmp_path_factory, "v1", "v2")
    with open(repo / "fraud" / "v2" / "model.fp32.onnx", "ab") as handle:
        handle.write(b"\0")
    with running_server(repo, tmp_path_factory.mktemp("logs"), {"FLYWHEEL_PREDICTOR_MODEL_VERSION": "v1"}) as server:
        for _ in range(5):
            response = httpx.post(f"{server.url}/v2/models/fraud/versions/v2/infer", json=v2_body())
            assert response.status_code == 503
            error = response.json()["error"]
            assert "version v2 cannot be served" in error and "model.fp32.onnx has sha256" in error
        (line,) = log_lines(server, "could not load model=fraud version=v2")
        assert "was modified" in line and "LOAD_RETRY_S" in line
        assert metric(server, 'flywheel_predictor_version_loads_total{model="fraud",outcome="failed"}') == 1.0
        response = httpx.post(f"{server.url}/v2/models/fraud/infer", json=v2_body())
        assert response.status_code == 200 and response.headers[HEADER] == "v1"
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_a_listed_version_that_is_tampered_refuses_to_start(tmp_path_factory: pytest.TempPathFactory) -> None:
    from conftest import run_to_exit

    repo = repo_with(tmp_path_factory, "v1", "v2")
    shutil.copyfile(repo / "fraud" / "v1" / "MODEL_CARD.md", repo / "fraud" / "v2" / "model.fp32.onnx")
    result = run_to_exit(repo, {"FLYWHEEL_PREDICTOR_MODEL_VERSION": "v1", "FLYWHEEL_PREDICTOR_VERSIONS": "v2"})
    assert result.returncode == 1
    assert "FLYWHEEL_PREDICTOR_VERSIONS lists v2, which cannot be served" in result.stderr
    assert "was modified" in result.stderr
