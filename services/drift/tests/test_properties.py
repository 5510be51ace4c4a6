"""Property tests (hypothesis): the pure parsers take any input and either parse it or raise the service's 4xx
error, never anything else; the statistics, the window test and MMD give a defined answer on degenerate
data (constant columns, identical rows, one class of labels, a window of one row), never an exception."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel_drift._errors import RequestError, status_of
from flywheel_drift._events import STRUCTURED, parse_cloudevent, parse_cloudevent_batch
from flywheel_drift._payloads import parse_batch, parse_labels
from flywheel_drift._performance import PerformanceLimits, evaluate
from flywheel_drift._repo import ReferenceLoader
from flywheel_drift._stats import bh_adjusted, categorical_test, category_counts, numeric_test, psi
from flywheel_drift._window import evaluate_window

from conftest import NAMES, make_settings, publish_version, synthetic_rows
from test_events import kserve, transformer_request, transformer_response

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.floats(-2.0, 2.0))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)
# Bodies near the real ones, so the properties reach deep into the parsers, not only their first check.
rowish = st.lists(st.lists(numbers, min_size=0, max_size=3), min_size=0, max_size=3)
v2_fields = st.fixed_dictionaries({}, optional={
    "inputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["input", "transaction_id", "x"])}, optional={
        "datatype": st.sampled_from(["FP32", "BYTES", "INT64"]), "shape": json_values | st.lists(st.integers(-1, 4)),
        "data": json_values | rowish}), max_size=3),
    "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["probability", "unseen", "transaction_id"])},
                                              optional={"datatype": st.sampled_from(["FP32", "BYTES"]),
                                                        "shape": st.lists(st.integers(-1, 4)),
                                                        "data": json_values | rowish}), max_size=3),
    "instances": json_values | rowish, "predictions": json_values | st.lists(
        st.fixed_dictionaries({"probability": numbers}, optional={"unseen": json_values, "id": scalars})),
    "data": json_values, "model_name": scalars, "model_version": scalars, "parameters": json_values})
header_values = st.one_of(st.text(max_size=12), st.sampled_from(
    ["1.0", "0.3", "application/json", "application/cloudevents+json", "text/plain",
     "org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response",
     "io.seldon.serving.inference.response", "2026-11-23T00:00:01Z", "%zz", "fraud"]))
headers = st.dictionaries(st.sampled_from(["content-type", "ce-specversion", "ce-id", "ce-type", "ce-time",
                                           "ce-source", "ce-inferenceservicename"]), header_values)


def _parses_or_4xx(parse, *args):
    try:
        parse(*args)
    except RequestError as e:
        assert 400 <= status_of(e) < 500
        assert e.message


@FAST
@given(headers, st.one_of(json_values, v2_fields).map(lambda v: json.dumps(v).encode()) | st.binary(max_size=40))
def test_any_cloudevent_parses_or_is_a_4xx(hs, body):
    _parses_or_4xx(parse_cloudevent, hs, body, 0.0)


@FAST
@given(st.sampled_from(["request", "response"]), v2_fields)
def test_any_body_of_a_well_formed_binary_event_parses_or_is_a_4xx(role, body):
    _parses_or_4xx(parse_cloudevent, kserve(role), json.dumps(body).encode(), 0.0)


def _finite(value):
    """JSON has no NaN or infinity: such a float would make the whole batch unreadable, not one event."""
    if isinstance(value, float) and not math.isfinite(value):
        return 0.0
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


attribute_values = st.one_of(header_values, st.integers(0, 3), st.none())
envelopes = st.fixed_dictionaries({}, optional={
    "specversion": st.sampled_from(["1.0", "0.3", "2"]) | attribute_values, "id": attribute_values,
    "source": attribute_values, "time": attribute_values, "inferenceservicename": attribute_values,
    "type": st.sampled_from(["org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response",
                             "io.seldon.serving.inference.request"]) | attribute_values,
    "datacontenttype": st.sampled_from(["application/json", "text/csv"]), "data": v2_fields | json_values,
    "data_base64": st.text(max_size=8) | v2_fields.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
}).map(_finite)


@FAST
@given(json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=40)
       | st.lists(envelopes | json_values, max_size=4).map(lambda v: json.dumps(_finite(v)).encode()))
def test_any_cloudevent_batch_parses_or_is_a_4xx(body):
    _parses_or_4xx(parse_cloudevent_batch, body, 0.0)


@FAST
@given(st.lists(envelopes, min_size=1, max_size=4))
def test_a_batch_parses_exactly_when_each_event_parses_alone_else_it_names_the_first_that_does_not(events):
    alone, first_bad = [], None
    for i, event in enumerate(events):
        try:
            alone.append(parse_cloudevent({"content-type": STRUCTURED}, json.dumps(event).encode(), 0.0))
        except RequestError as e:
            first_bad = (i, type(e))
            break
    try:
        parsed = parse_cloudevent_batch(json.dumps(events).encode(), 0.0)
    except RequestError as e:
        assert first_bad is not None, e
        assert (type(e), e.field.split(".")[0]) == (first_bad[1], f"[{first_bad[0]}]")
        assert e.message.startswith(f"batch event [{first_bad[0]}]: ")
    else:
        assert first_bad is None
        assert [(h.id, h.role, h.rows, h.version) for h, _ in parsed] == [(h.id, h.role, h.rows, h.version)
                                                                          for h in alone]
        assert [kept for _, kept in parsed] == events


@FAST
@given(json_values | st.fixed_dictionaries({"model": scalars}, optional={
    "rows": json_values | rowish, "probabilities": json_values | st.lists(numbers, max_size=3), "ids": json_values,
    "version": scalars, "time": scalars}))
def test_any_batch_parses_or_is_a_4xx(payload):
    _parses_or_4xx(parse_batch, payload, 0.0, "batch-1")


@FAST
@given(json_values | st.fixed_dictionaries({"labels": st.lists(
    st.fixed_dictionaries({}, optional={"id": scalars, "label": scalars, "x": scalars}) | json_values, max_size=3)}))
def test_any_labels_body_parses_or_is_a_4xx(payload):
    try:
        labels = parse_labels(payload)
    except RequestError as e:
        assert status_of(e) == 400
    else:
        assert all(isinstance(label.key, str) and label.key and label.label in (0, 1) for label in labels)


def test_the_real_transformer_events_still_parse():
    assert parse_cloudevent(kserve("request"), transformer_request(2), 0.0).rows == 2
    assert parse_cloudevent(kserve("response"), transformer_response(2), 0.0).unseen is None


# ---- statistics on degenerate data ---------------------------------------------------------------------

def degenerate(draw_values: st.SearchStrategy[float]) -> st.SearchStrategy[np.ndarray]:
    """Arrays of 0-60 values drawn from at most three distinct values (constant columns, heavy ties)."""
    return st.lists(draw_values, min_size=1, max_size=3).flatmap(
        lambda pool: st.lists(st.sampled_from(pool), max_size=60)).map(lambda v: np.asarray(v, dtype=np.float64))


finite = st.floats(-1e6, 1e6, allow_nan=False)


@FAST
@given(degenerate(finite), degenerate(finite))
def test_numeric_test_is_defined_on_ties_constants_and_tiny_samples(ref, cur):
    result = numeric_test(np.sort(ref), cur)
    assert 0.0 < result.p_value <= 1.0 and 0.0 <= result.distance <= 1.0 and math.isfinite(result.statistic)


@FAST
@given(degenerate(st.integers(0, 4).map(float)), degenerate(st.integers(0, 6).map(float)))
def test_categorical_test_and_psi_are_defined_on_one_category_and_empty_windows(ref, cur):
    categories = np.unique(ref)
    result = categorical_test(categories, category_counts(ref, categories), cur)
    assert 0.0 < result.p_value <= 1.0 and 0.0 <= result.distance <= 1.0
    counts = category_counts(cur, categories)
    ref_counts = category_counts(ref, categories)
    value = psi(ref_counts / max(ref_counts.sum(), 1), counts / max(counts.sum(), 1))
    assert math.isfinite(value) and value >= 0.0


@FAST
@given(st.lists(st.floats(0.0, 1.0), max_size=30))
def test_bh_is_defined_for_any_p_values(ps):
    assert all(0.0 <= q <= 1.0 for q in bh_adjusted(ps))


@FAST
@given(st.integers(0, 300), st.sampled_from([0, 1]), st.floats(0.0, 1.0))
def test_performance_is_defined_with_a_single_class_of_labels(n, label, p):
    limits = PerformanceLimits(min_labels=1, min_positives=1, roc_auc_drop=0.05, pr_auc_drop=0.15, ece_rise=0.05)
    out = evaluate(np.full(n, label), np.full(n, p), {"roc_auc": 0.9, "pr_auc": 0.5, "ece": 0.01}, limits, n, n)
    assert out["roc_auc"] is None and out["pr_auc"] is None  # undefined with one class: said so, not raised
    assert out["status"] in ("insufficient_labels", "insufficient_positives", "ok", "degraded")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    publish_version(root / "repo")
    return ReferenceLoader(make_settings(root)).load("fraud", "v1")


def _window(kind: str, n: int, seed: int) -> np.ndarray:
    x = synthetic_rows(max(n, 1), seed)[:n]
    if kind == "identical rows":
        x[:] = x[0]
    elif kind == "constant columns":
        x[:, [NAMES.index(c) for c in ("amount_log", "txn_count_1h", "country")]] = 3.0
    elif kind == "one value everywhere":
        x[:] = 0.0
    return x


kinds = st.sampled_from(["identical rows", "constant columns", "one value everywhere", "plain"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds, st.integers(1, 40), st.integers(0, 5), st.sampled_from([0.0, 0.5, 1.0, None]))
def test_a_degenerate_window_gets_a_defined_result(reference, kind, n, seed, p):
    x = _window(kind, n, seed)
    probabilities = np.full(n, np.nan if p is None else p)
    result, view = evaluate_window(reference, x, probabilities, 0.05, 1, 0.0, 1.0)
    assert result["rows"] <= n and isinstance(result["drift"], bool)
    for feature in result["features"].values():
        assert 0.0 <= feature["p_value"] <= 1.0 and 0.0 <= feature["q_value"] <= 1.0
        assert math.isfinite(feature["psi"]) and math.isfinite(feature["distance"])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds, st.sampled_from([1, 2, 30]), st.integers(0, 3))
def test_mmd_on_degenerate_windows_answers_and_never_fails(reference, kind, n, seed):
    from flywheel_drift._mmd import MMDRunner

    runner = MMDRunner(rows=200, permutations=10, alpha=0.05, on_result=lambda key, result: None)
    try:
        x = _window(kind, n, seed)
        p = np.full(n, 0.1)
        view, keep = reference.matched(x, seed=seed)
        result = runner._test(reference, view, x[keep], p[keep], 1.0)  # before: ZeroDivisionError on one row
        assert isinstance(result["drift"], bool)
        if result["p_value"] is None:
            assert min(result["rows"], result["reference_rows"]) < 2 and not result["drift"]
        else:
            assert 0.0 <= result["p_value"] <= 1.0
    finally:
        runner.stop()
