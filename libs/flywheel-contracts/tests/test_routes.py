"""The route contract: what a writer may send and what every reader can rely on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flywheel_contracts import Route


def route(**fields: object) -> Route:
    return Route.model_validate({"model": "fraud", "stable": {"version": "v1"}, **fields})


def test_a_minimal_route_sends_everything_to_the_stable() -> None:
    r = route()
    assert r.versions() == ("v1",)
    assert r.weight_steps == 0 and r.shadow_steps == 0
    assert r.to_json() == {
        "schemaVersion": 1, "model": "fraud", "generation": 0, "stable": {"version": "v1"},
        "candidateWeight": 0.0, "shadowPercent": 0.0,
    }


def test_json_round_trip_keeps_every_field() -> None:
    r = route(
        candidate={"version": "v2", "endpoint": "http://fraud-v2:8090/"},
        candidateWeight=12.5, previewHeader="x-flywheel-preview", stickiness={"cookie": "session"},
        shadowPercent=0.25, generation=3,
    )
    again = Route.model_validate(r.to_json())
    assert again == r
    assert again.candidate.endpoint == "http://fraud-v2:8090"
    assert r.weight_steps == 1250 and r.shadow_steps == 25


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"candidateWeight": 5}, "candidateWeight needs a candidate"),
        ({"shadowPercent": 5}, "shadowPercent needs a candidate"),
        ({"previewHeader": "x-p"}, "previewHeader needs a candidate"),
        ({"candidate": {"version": "v1"}}, "must differ"),
        ({"candidate": {"version": "v2"}, "candidateWeight": 100.5}, "candidateWeight"),
        ({"candidate": {"version": "v2"}, "candidateWeight": 0.001}, "resolution"),
        ({"candidate": {"version": "v2"}, "candidateWeight": -1}, "candidateWeight"),
        ({"candidate": {"version": "v2", "endpoint": "ftp://x"}}, "endpoint"),
        ({"candidate": {"version": "v2"}, "stickiness": {}}, "exactly one"),
        ({"candidate": {"version": "v2"}, "stickiness": {"header": "a", "cookie": "b"}}, "exactly one"),
        ({"stable": {"version": "v 1"}}, "version"),
        ({"model": "Fraud!"}, "model"),
        ({"weight": 5}, "weight"),
        ({"schemaVersion": 2}, "schemaVersion"),
        ({"generation": -1}, "generation"),
    ],
)
def test_a_wrong_route_is_refused_naming_the_field(fields: dict, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        route(**fields)


@given(st.integers(min_value=0, max_value=10000))
def test_every_step_of_a_hundredth_of_a_percent_is_exact(steps: int) -> None:
    r = route(candidate={"version": "v2"}, candidateWeight=steps / 100)
    assert r.weight_steps == steps
