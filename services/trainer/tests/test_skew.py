"""`python -m flywheel_trainer skew`: served model inputs against the point-in-time join training makes.

The offline side is real: the session's small simulated history, applied to a fresh Feast registry (conftest),
joined by the trainer's own code. The drift service is a stand-in only here (`DriftStandIn`, a local HTTP server
that answers the three endpoints of flywheel_contracts.skew with typed bodies and checks the bearer token),
because what these tests pin is the trainer's join and comparison; tests/integration/test_skew.py runs the
command against the real drift service, transformer and features service.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flywheel_contracts.drift import OnlineReport, Report, Verdict, VersionReport
from flywheel_contracts.skew import MAX_EXAMPLES, ServedRow, SkewResult, SkewSample
from flywheel_core import feature_pipeline, model_repo, schema
from flywheel_core.feature_pipeline import read_parquet
from flywheel_trainer import TrainingSet, main
from flywheel_trainer._pipeline import training_medians
from flywheel_trainer._publish import base_metadata
from flywheel_trainer._skew import compare

from conftest import FEATURE_REPO

TOKEN = "skew-test-token"
NAMES = [c["name"] for c in schema.COLUMNS]


# ---- builders ----------------------------------------------------------------------------------------------


class DriftStandIn:
    """GET /v1/report, GET /v1/skew/sample (token), POST /v1/skew (token) -> 202, each result kept in `posted`."""

    def __init__(self, samples: dict[str, SkewSample]) -> None:
        self.samples = samples
        self.posted: list[SkewResult] = []
        self.requests: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet: pytest shows what a test asserts
                pass

            def _answer(self, status: int, body: object = None) -> None:
                raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _authorized(self) -> bool:
                if self.headers.get("authorization") == f"Bearer {TOKEN}":
                    return True
                self._answer(401, {"error": "unauthorized", "detail": "the drift skew token is required"})
                return False

            def do_GET(self) -> None:
                stand_in.requests.append(f"GET {self.path}")
                path, _, query = self.path.partition("?")
                params = dict(p.split("=", 1) for p in query.split("&") if p)
                if path == "/v1/report":
                    self._answer(200, stand_in.report(params.get("model")).model_dump_json().encode())
                elif path == "/v1/skew/sample" and self._authorized():
                    sample = stand_in.samples[params["version"]]
                    rows = sample.rows[: int(params["limit"])]
                    self._answer(200, sample.model_copy(update={"rows": rows}).model_dump_json().encode())

            def do_POST(self) -> None:
                stand_in.requests.append(f"POST {self.path}")
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path == "/v1/skew" and self._authorized():
                    stand_in.posted.append(SkewResult.model_validate_json(body))
                    self._answer(202, {"accepted": True})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def report(self, model: str | None) -> Report:
        versions = [
            VersionReport(
                model=s.model, version=s.version, verdict=Verdict.INCONCLUSIVE, drift=False, rows=len(s.rows), windows=0,
                open_window_rows=0, episodes={}, last_window=None, reference={}, features=[], history=[],
                online=OnlineReport(alarms=[]), mmd=[], performance=None, performance_history=[],
                predictions_logged=s.seen, predictions_labelled=0, alerts=[],
            )
            for s in self.samples.values() if model in (None, s.model)
        ]
        return Report(ready=True, ready_after_s=0.0, replayed_events=0, backlog={"rows": 0, "bytes": 0},
                      mmd="disabled", settings={}, versions=versions)

    def __enter__(self) -> DriftStandIn:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def version(training_set: TrainingSet, tmp_path_factory: pytest.TempPathFactory) -> model_repo.ModelVersion:
    """A published fraud v1 as far as serving reads it: the input columns and the training medians as defaults
    (no ONNX file: the skew check reads the metadata only)."""
    repo = tmp_path_factory.mktemp("model_repo")
    path = repo / "fraud" / "v1"
    path.mkdir(parents=True)
    defaults = training_medians(training_set, np.arange(len(training_set.frame)))
    document = {"schema_version": model_repo.SCHEMA_VERSION, "model": "fraud", "version": "v1",
                **base_metadata(schema.FEATURE_SERVICE, defaults)}
    (path / model_repo.METADATA_FILE).write_text(json.dumps(document))
    return model_repo.load_version(path, verify=False)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "skew-token"
    path.write_text(TOKEN + "\n")
    return path


def served_as_trained(training_set: TrainingSet, version: model_repo.ModelVersion, rows: int) -> list[ServedRow]:
    """The newest `rows` training rows as a transformer that serves exactly what training joined would log them."""
    frame = training_set.frame.tail(rows)
    vectors = schema.vectorize_frame(frame, version.spec.defaults)
    return [
        ServedRow(id=str(tid), time=ts.timestamp(), inputs=dict(zip(NAMES, map(float, vector), strict=True)))
        for tid, ts, vector in zip(frame["transaction_id"], frame["event_timestamp"], vectors, strict=True)
    ]


def skew_cli(stand_in: DriftStandIn, version: model_repo.ModelVersion, data: Path, token: Path, *extra: str) -> int:
    return main(["skew", "--feature-repo", str(FEATURE_REPO), "--data", str(data),
                 "--model-repo", str(version.path.parents[1]), "--drift-url", stand_in.url, "--token-file", str(token),
                 *extra])


# ---- the check through the command line --------------------------------------------------------------------


def test_rows_served_as_training_joined_them_match_and_altered_ones_are_counted_with_examples(
    small_data, training_set, version, token_file, capsys
):
    rows = served_as_trained(training_set, version, 40)
    stale = rows[:7]  # a served txn_count_1h one off: what a lagging online store serves
    rows[:7] = [r.model_copy(update={"inputs": {**r.inputs, "txn_count_1h": r.inputs["txn_count_1h"] + 1}})
                for r in stale]
    unknown = ServedRow(id="inference-1/0", time=rows[-1].time, inputs=rows[-1].inputs)
    sample = SkewSample(model="fraud", version="v1", seen=1000, rows=[*rows, unknown])
    with DriftStandIn({"v1": sample}) as stand_in:
        assert skew_cli(stand_in, version, small_data, token_file) == 0  # no --version: every version reported
    [result] = stand_in.posted
    assert (result.model, result.version, result.rows, result.unmatched) == ("fraud", "v1", 40, 1)
    assert set(result.features) == set(NAMES)
    assert result.mismatched_features == ["txn_count_1h"]
    assert all(f.compared == 40 for f in result.features.values())
    skewed = result.features["txn_count_1h"]
    assert skewed.mismatched == 7
    assert [e.id for e in skewed.examples] == [r.id for r in stale[:MAX_EXAMPLES]]
    assert all(e.served == e.offline + 1 for e in skewed.examples)
    out = capsys.readouterr().out
    assert "fraud v1: compared 40 of 41" in out and "1 unmatched" in out and "txn_count_1h 7/40" in out


@pytest.fixture
def stream_log(small_data: Path) -> Iterator[dict]:
    """One live transaction the stream step logged (not labelled yet, so in no live part), one minute after the
    history's last, of the history's last card; the log is removed afterwards (small_data is the session's)."""
    history = read_parquet(small_data / feature_pipeline.TRANSACTIONS_FILE)
    last = history.sort_values("event_timestamp").iloc[-1]
    at = last["event_timestamp"] + pd.Timedelta(minutes=1)
    entry = {"transaction_id": "t-live-1", "card_id": last["card_id"], "merchant_id": last["merchant_id"],
             "event_us": int(feature_pipeline.to_us(pd.Series([at]))[0]), "amount": 42.5, "country": "US"}
    log = small_data / "stream" / "transactions.jsonl"
    log.parent.mkdir()
    log.write_text(json.dumps(entry) + "\n" + '{"transaction_id": "t-live-2", "card_id"')  # a line being written
    yield {**entry, "event_timestamp": at}
    log.unlink()
    log.parent.rmdir()


def test_a_transaction_only_in_the_stream_log_is_joined_to_its_cards_state_just_before_it(
    small_data, version, token_file, stream_log
):
    # The card's state just before the live transaction: its newest row in the batch table, computed here from
    # the table itself, not by the code under test.
    card_rows = read_parquet(small_data / feature_pipeline.CARD_ACTIVITY_FILE)
    state = card_rows[card_rows["card_id"] == stream_log["card_id"]].sort_values("event_timestamp").iloc[-1]
    inputs = {name: float(state[name]) for name in schema.CARD_FEATURES}
    inputs.update(card_id=float(schema.bucket("card_id", stream_log["card_id"])),
                  country=float(schema.bucket("country", "US")), channel=float(schema.bucket("channel", "web")))
    row = ServedRow(id="t-live-1", time=stream_log["event_timestamp"].timestamp(), inputs=inputs)
    half = ServedRow(id="t-live-2", time=row.time, inputs=inputs)  # its log line is not complete yet
    sample = SkewSample(model="fraud", version="v1", seen=2, rows=[row, half])
    with DriftStandIn({"v1": sample}) as stand_in:
        assert skew_cli(stand_in, version, small_data, token_file, "--version", "v1") == 0
    [result] = stand_in.posted
    assert (result.rows, result.unmatched) == (1, 1)
    for name in (*schema.CARD_FEATURES, "card_id", "country"):
        assert (result.features[name].compared, result.features[name].mismatched) == (1, 0), name
    # The stream log does not keep these raw fields: not rebuilt, so not compared (never a mismatch by omission).
    for name in ("channel", "currency", "merchant_category"):
        assert result.features[name].compared == 0, name


# ---- refusals: the exit codes ------------------------------------------------------------------------------


def test_a_drift_service_that_cannot_be_reached_exits_1_naming_the_url(small_data, version, token_file, caplog):
    with DriftStandIn({}) as stand_in:
        url = stand_in.url
    stand_in.url = url  # closed now: nothing listens there
    assert skew_cli(stand_in, version, small_data, token_file) == 1
    assert f"GET {url}/v1/report?model=fraud failed: the drift service cannot be reached" in caplog.text


def test_a_refused_token_exits_1_naming_the_url_and_status(small_data, version, tmp_path, caplog):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    sample = SkewSample(model="fraud", version="v1", seen=0, rows=[])
    with DriftStandIn({"v1": sample}) as stand_in:
        assert skew_cli(stand_in, version, small_data, wrong, "--version", "v1") == 1
    assert f"GET {stand_in.url}/v1/skew/sample?model=fraud&version=v1&limit=500 answered 401" in caplog.text
    assert stand_in.posted == []


def test_a_missing_token_file_or_a_bad_limit_exits_2_before_any_request(small_data, version, tmp_path, caplog):
    with DriftStandIn({}) as stand_in:
        assert skew_cli(stand_in, version, small_data, tmp_path / "absent") == 2
        assert "FLYWHEEL_TRAINER_SKEW_TOKEN_FILE" in caplog.text
        assert skew_cli(stand_in, version, small_data, tmp_path / "absent", "--limit", "0") == 2
        assert "Config 'FLYWHEEL_TRAINER_SKEW_LIMIT' has value 0" in caplog.text
    assert stand_in.requests == []


# ---- the comparison alone ----------------------------------------------------------------------------------


def test_examples_stop_at_the_contracts_cap_and_a_value_that_cannot_be_rebuilt_is_not_compared():
    offline = pd.DataFrame({"amount_log": [1.0] * 8, "channel": [np.nan] * 8}, index=[f"t{i}" for i in range(8)])
    rows = [ServedRow(id=f"t{i}", time=0.0, inputs={"amount_log": 2.0, "channel": 3.0}) for i in range(8)]
    result = compare(SkewSample(model="fraud", version="v1", seen=8, rows=rows), offline, checked_at=1.0)
    assert result.features["amount_log"].mismatched == 8
    assert len(result.features["amount_log"].examples) == MAX_EXAMPLES
    assert (result.features["channel"].compared, result.features["channel"].mismatched) == (0, 0)


def test_a_column_the_served_row_lacks_is_a_mismatch():
    offline = pd.DataFrame({"amount_log": [1.0]}, index=["t1"])
    result = compare(SkewSample(model="fraud", version="v1", seen=1, rows=[ServedRow(id="t1", time=0.0, inputs={})]),
                     offline, checked_at=1.0)
    assert result.features["amount_log"].mismatched == 1
    assert result.features["amount_log"].examples[0].served is None
