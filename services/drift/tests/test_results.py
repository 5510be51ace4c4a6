"""Results and alerts are typed and versioned: the report and every alert validate against their models,
carry `schema_version`, and keep every field the rollout controller reads
(services/controller/src/flywheel_controller/_provider_drift.py)."""

import json
import re
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from flywheel_drift import Alert, Report, Verdict

from conftest import Harness, make_settings, synthetic_probabilities, synthetic_rows
from test_alerts import Sink

README = Path(__file__).parents[1] / "README.md"

CONTROLLER_READS = {
    "version": ("model", "version", "rows", "drift", "features", "online", "alerts"),
    "feature": ("name",),
    "last": ("drift",),
    "online": ("alarms",),
}
"""What _provider_drift's private models require (the fields it reads; everything else it ignores)."""


def test_the_report_validates_and_has_what_the_controller_reads(harness):
    before = harness.client.get("/v1/report").json()
    assert before["schema_version"] == 1
    assert Report.model_validate(before).versions[0].verdict is Verdict.INCONCLUSIVE
    for seed in range(2):
        harness.batch(synthetic_rows(500, seed, shift={"amount_log": 1.0}), synthetic_probabilities(500, seed))
    harness.sync()
    data = harness.client.get("/v1/report").json()
    report = Report.model_validate(data)  # extra="forbid": nothing undocumented either
    (version,) = data["versions"]
    assert report.versions[0].verdict is Verdict.DRIFTED and version["verdict"] == "drifted"
    assert all(name in version for name in CONTROLLER_READS["version"])
    assert all(name in f for f in version["features"] for name in CONTROLLER_READS["feature"])
    lasts = [f["last"] for f in version["features"] if "last" in f]
    assert lasts and all(isinstance(last["drift"], bool) for last in lasts)
    assert isinstance(version["online"]["alarms"], list) and isinstance(version["alerts"], list)
    assert isinstance(version["rows"], int) and isinstance(version["drift"], bool)
    assert all(Alert.model_validate(a).schema_version == 1 for a in version["alerts"])


def test_a_delivered_alert_is_the_documented_typed_json(tmp_path, repo):
    sink = Sink()
    h = Harness(make_settings(tmp_path, alert_webhook_sinks="http://trainer/hook"),
                alert_transport=httpx.MockTransport(sink))
    try:
        for seed in range(3):
            h.batch(synthetic_rows(500, seed, shift={"amount_log": 1.0}), synthetic_probabilities(500, seed))
        h.sync()
        h.service.alerts.drain()
        body = json.loads(sink.requests[0].content)
        alert = Alert.model_validate(body)
        assert body["schema_version"] == 1 and alert.detector.value in ("window", "online")
        assert body["time"].endswith("Z") and body["id"] == h.version()["alerts"][0]["id"]
    finally:
        h.close()


def test_the_readme_examples_validate():
    text = README.read_text()
    section = text[text.index("## Results and alerts"):]
    examples = re.findall(r"```json\n(.*?)```", section, flags=re.S)
    assert len(examples) >= 2
    for example in examples:
        Alert.model_validate_json(example)


def test_an_alert_must_carry_the_evidence_of_its_detector():
    with pytest.raises(ValidationError, match="window evidence only"):
        Alert.model_validate({"model": "fraud", "version": "v1", "category": "data", "detector": "window", "at": 1.0})
    with pytest.raises(ValidationError):
        Alert.model_validate({"schema_version": 2, "model": "fraud", "version": "v1", "category": "data",
                              "detector": "online", "at": 1.0, "online": {"at": 1.0, "feature": "a",
                              "direction": "up", "run_length": 3, "statistic": 9.0, "also": []}})
