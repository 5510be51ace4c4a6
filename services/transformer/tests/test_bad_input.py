"""Bad and odd input against a real transformer process: numbers no float holds, impossible values, values the
model never saw, and wrong methods, each answered with a JSON 4xx naming what is wrong (never a 500), on a
keep-alive connection that stays usable."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from flywheel_core.served_routes import SERVED_ROUTES

from conftest import publish_version, transaction
from servers import CloudEventSink, FeatureServerStub, PredictorStub, TransformerProcess
from test_policy import DOMAIN

PREDICT = "/v1/models/fraud:predict"


@pytest.fixture(scope="module")
def transformer(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("bad-input")
    publish_version(workdir / "model_repo", training_domain=DOMAIN)
    with FeatureServerStub() as features, PredictorStub() as predictor, CloudEventSink() as sink:
        env = {
            "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(workdir / "model_repo"),
            "FLYWHEEL_TRANSFORMER_FEATURES_URL": features.url,
            "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": predictor.url,
            "FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": sink.url + "/",
            "FLYWHEEL_TRANSFORMER_HTTP_HOST": "127.0.0.1",
        }
        with TransformerProcess(env, workdir / "transformer.log") as process:
            process.sink = sink
            yield process


class Connection:
    """One HTTP/1.1 keep-alive connection, by hand: each exchange must come back on the same socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def exchange(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n"
        head += "content-type: application/json\r\n\r\n" if body else "\r\n"
        self.sock.sendall(head.encode() + body)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._read()
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = raw.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self.buffer += self._read()
        payload, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, payload

    def _read(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the keep-alive connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def body_with_amount(literal: str, **extra: str) -> bytes:
    """A predict body whose amount (and any extra field) is the given JSON literal, as a client would send it."""
    text = json.dumps({"instances": [transaction(amount=0.123456789, **{k: 0.987654321 for k in extra})]})
    text = text.replace("0.123456789", literal)
    for value in extra.values():
        text = text.replace("0.987654321", value, 1)
    return text.encode()


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (body_with_amount("1e300"), 422, "amount"),  # finite, but no authorization is that large
        (body_with_amount("-12.5"), 422, "amount"),
        (body_with_amount("NaN"), 400, "amount"),
        (body_with_amount("Infinity"), 400, "amount"),
        (body_with_amount("-Infinity"), 400, "amount"),
        (body_with_amount("1e400"), 400, "amount"),  # beyond a 64-bit float
        (body_with_amount("1" + "0" * 400), 400, "amount"),  # an integer beyond a 64-bit float
        (body_with_amount("12.5", is_fraud="NaN"), 400, "is_fraud"),  # in a field the transformer ignores
        (json.dumps({"instances": [transaction()], "x": [1]}).replace("[1]", "[1, 1e999]").encode(), 400, "x[1]"),
    ],
)
def test_a_number_no_float_holds_or_an_impossible_one_is_a_4xx_naming_the_field_on_a_usable_connection(
    transformer, body, status, field
):
    connection = Connection(transformer.port)
    try:
        code, headers, payload = connection.exchange("POST", PREDICT, body)
        assert code == status, payload
        assert headers["content-type"] == "application/json"
        answer = json.loads(payload)
        assert answer["field"] == field and field in answer["error"]
        assert answer["code"] == ("unprocessable" if status == 422 else "bad_request")
        assert headers.get("connection", "").lower() != "close"
        # The same connection answers the next request.
        code, _, payload = connection.exchange("POST", PREDICT, json.dumps({"instances": [transaction()]}).encode())
        assert code == 200, payload
    finally:
        connection.close()


def test_a_future_timestamp_is_a_422_naming_it(transformer):
    response = transformer.predict([transaction(event_timestamp="2999-01-01T00:00:00Z")])
    assert response.status_code == 422
    assert (response.json()["field"], response.json()["type"]) == ("event_timestamp", "impossible_value")


def test_a_refused_request_is_counted_as_invalid(transformer):
    before = transformer.metric("flywheel_transformer_invalid_requests_total")
    assert transformer.predict([transaction(amount=-1)]).status_code == 422
    connection = Connection(transformer.port)
    try:
        assert connection.exchange("POST", PREDICT, body_with_amount("NaN"))[0] == 400
    finally:
        connection.close()
    assert transformer.metric("flywheel_transformer_invalid_requests_total") == before + 2


def test_an_unseen_value_is_flagged_in_the_answer_the_inference_log_and_the_metrics(transformer):
    known = transaction(country="DE", currency="EUR", channel="pos", merchant_category="grocery")
    odd = {**known, "transaction_id": "unseen-1", "country": "XX", "channel": "crypto"}
    response = transformer.predict([known, odd])
    assert response.status_code == 200, response.text
    assert [p["unseen"] for p in response.json()["predictions"]] == [[], ["channel", "country"]]
    assert transformer.metric("flywheel_transformer_unseen_values_total") >= 2

    inference_id = response.json()["inference_id"]

    def response_event(events):
        return next(
            (
                json.loads(e["body"])
                for e in events
                if e["headers"].get("ce-id") == inference_id and e["headers"]["ce-type"].endswith("response")
            ),
            None,
        )

    body = response_event(transformer.sink.wait_for(lambda events: response_event(events) is not None))
    unseen = next(output for output in body["outputs"] if output["name"] == "unseen")
    assert unseen["data"] == ["", "channel,country"]


# Wrong methods: 405 with Allow and a JSON body on every served route

CONCRETE = {"{model_name}": "fraud", "{model_version}": "v1"}
TAKES = {route: "POST" if route.endswith(("infer", ":predict")) else "GET" for route in SERVED_ROUTES}
"""The one method each served route takes: inference is POST, everything else GET."""


def concrete(template: str) -> str:
    for name, value in CONCRETE.items():
        template = template.replace(name, value)
    return template


@pytest.mark.parametrize("template", sorted(SERVED_ROUTES))
def test_every_served_route_answers_a_wrong_method_with_405_allow_and_a_json_body(transformer, template):
    path = concrete(template)
    with httpx.Client(base_url=transformer.url, timeout=10) as client:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            if method == TAKES[template]:
                continue
            response = client.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert response.headers["allow"] == TAKES[template], (method, path)
            assert response.headers["content-type"] == "application/json"
            answer = response.json()
            assert (answer["code"], answer["type"], answer["allow"]) == (
                "method_not_allowed",
                "method_not_allowed",
                [TAKES[template]],
            )
            assert method in answer["error"] and path in answer["error"]


def test_the_right_method_still_reaches_each_route(transformer):
    with httpx.Client(base_url=transformer.url, timeout=10) as client:
        assert client.post(PREDICT, json={"instances": [transaction()]}).status_code == 200
        assert client.get("/v1/models/fraud").status_code == 200
        assert client.get("/v2/models/fraud/ready").status_code == 200


def test_a_path_no_route_serves_is_still_a_json_404(transformer):
    response = httpx.get(f"{transformer.url}/v1/nothing/here", timeout=10)
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_the_body_of_a_transformer_answer_never_holds_a_non_finite_number(transformer):
    response = transformer.predict([transaction(amount=10_000_000.0)])
    assert response.status_code == 200
    json.loads(response.text, parse_constant=lambda c: pytest.fail(f"non-finite {c} in the answer"))
