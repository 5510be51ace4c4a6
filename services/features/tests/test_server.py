import httpx
import pytest

from flywheel_features import NotReady, check_ready

ONLINE = "/get-online-features"


@pytest.fixture(scope="module")
def client(server_url: str, read_header):
    """A reader: the transformer's view of the service (see test_guard for who may do what)."""
    with httpx.Client(base_url=server_url, timeout=30, headers=read_header) as client:
        yield client


def test_health_and_ready_answer_200(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_get_online_features_returns_feasts_columnar_response(client, card_activity):
    card = card_activity.sort_values("event_timestamp")["card_id"].iloc[-1]
    latest = card_activity[card_activity["card_id"] == card].sort_values("event_timestamp").iloc[-1]
    response = client.post(ONLINE, json={"features": ["card_activity:txn_count_24h", "card_activity:amount_mean_30d"],
                                         "entities": {"card_id": [card, "c999997"]}})
    assert response.status_code == 200
    body = response.json()
    names = body["metadata"]["feature_names"]
    assert sorted(names) == ["amount_mean_30d", "card_id", "txn_count_24h"]  # order is not guaranteed
    columns = dict(zip(names, body["results"], strict=True))
    assert columns["txn_count_24h"]["values"] == [int(latest["txn_count_24h"]), None]
    assert columns["txn_count_24h"]["statuses"] == ["PRESENT", "NOT_FOUND"]
    assert columns["amount_mean_30d"]["values"][0] == pytest.approx(latest["amount_mean_30d"])


def test_the_feature_service_serves_online_and_on_demand_features_together(client, card_activity):
    card = card_activity["card_id"].iloc[-1]
    response = client.post(ONLINE, json={"feature_service": "fraud_v1", "entities": {
        "card_id": [card], "merchant_id": ["m00001"], "amount": [120.0], "event_hour": [3]}})
    assert response.status_code == 200
    body = response.json()
    columns = dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))
    assert {"txn_count_1h", "merchant_fraud_rate_30d", "amount_to_card_mean", "is_night"} <= columns.keys()
    assert columns["is_night"]["values"] == [1]


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"features": ["card_activity:no_such_feature"], "entities": {"card_id": ["c000001"]}}, 404, "no_such_feature"),
        ({"features": ["no_such_view:x"], "entities": {"card_id": ["c000001"]}}, 404, "no_such_view"),
        ({"features": ["txn_count_24h"], "entities": {"card_id": ["c000001"]}}, 400, "txn_count_24h"),
        ({"features": ["card_activity:txn_count_24h"], "entities": {"merchant_id": ["m00001"]}}, 400, "card_id"),
        ({"features": [], "entities": {"card_id": ["c000001"]}}, 400, "No features"),
        ({"feature_service": "fraud_v1", "entities": {"card_id": ["c1"], "merchant_id": ["m1"]}}, 404, "event_hour"),
        ({"features": "card_activity:txn_count_24h", "entities": {"card_id": ["c1"]}}, 422, "features"),
    ],
)
def test_a_malformed_request_gets_a_4xx_naming_the_problem(client, body, status, names):
    response = client.post(ONLINE, json=body)
    assert response.status_code == status
    assert names in response.text


def test_a_body_that_is_not_json_gets_422_json_invalid(client):
    response = client.post(ONLINE, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "json_invalid" in response.text


def test_push_over_http_reaches_the_online_store(client, write_header):
    row = {"card_id": ["c900002"], "event_timestamp": ["2026-01-20T11:00:00+00:00"], "txn_count_1h": [2],
           "txn_count_24h": [5], "amount_sum_24h": [99.0], "amount_mean_30d": [19.8], "distinct_countries_24h": [1]}
    push = client.post("/push", headers=write_header,
                       json={"push_source_name": "card_activity_push", "to": "online", "df": row})
    assert push.status_code == 200, push.text
    read = client.post(ONLINE, json={"features": ["card_activity:txn_count_24h"], "entities": {"card_id": ["c900002"]}})
    assert read.json()["results"][1]["values"] == [5]


def test_metrics_count_requests_per_endpoint_and_status_with_bounded_labels(client):
    client.post(ONLINE, json={"features": ["card_activity:no_such_feature"], "entities": {"card_id": ["c1"]}})
    client.get("/no/such/path/12345")
    text = client.get("/metrics").text
    assert 'flywheel_features_requests_total{endpoint="/get-online-features",status="404"}' in text
    assert 'flywheel_features_request_duration_seconds_count{endpoint="/get-online-features"}' in text
    assert 'endpoint="other",status="404"' in text
    assert "/no/such/path" not in text


def test_ready_fails_naming_the_feature_service_the_registry_lacks(store):
    with pytest.raises(NotReady, match="fraud_v99"):
        check_ready(store, "fraud_v99")


def test_an_error_answer_keeps_the_keep_alive_connection_usable(client):
    bad = {"features": ["no_such_view:x"], "entities": {"card_id": ["c1"]}}
    for _ in range(3):
        assert client.post(ONLINE, json=bad).status_code == 404
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", ONLINE, "POST"), ("DELETE", "/health", "HEAD, GET"), ("POST", "/ready", "HEAD, GET"),
    ("PUT", "/metrics", "HEAD, GET"),
])
def test_a_wrong_method_is_a_json_405_with_allow(client, method, path, allow):
    answer = client.request(method, path)
    assert answer.status_code == 405 and set(answer.headers["allow"].split(", ")) == set(allow.split(", "))
    assert answer.json() == {"error": f"{method} is not allowed on {path}", "code": "method_not_allowed"}
