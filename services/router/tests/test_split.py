"""Splitting: weights are honoured to the binomial interval, stickiness is monotone, preview and pins win."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel_router import CompiledRoute, choose, pinned, ring_point, threshold

from conftest import route


def compiled(**fields: object) -> CompiledRoute:
    return CompiledRoute.of(route(candidate={"version": "v2"}, **fields))


@pytest.mark.parametrize("weight", [0.1, 1, 5, 25, 50, 99.9])
def test_the_candidate_share_is_within_the_binomial_99_percent_interval(weight: float) -> None:
    r, rng, n = compiled(candidateWeight=weight), random.Random(1), 20_000
    hits = sum(choose(r, None, None, rng).role == "candidate" for _ in range(n))
    p = weight / 100
    half_width = 2.576 * math.sqrt(n * p * (1 - p))
    assert abs(hits - n * p) <= half_width + 1


def test_weight_zero_and_hundred_are_exact() -> None:
    rng = random.Random(2)
    assert all(choose(compiled(candidateWeight=0), None, None, rng).role == "stable" for _ in range(2000))
    assert all(choose(compiled(candidateWeight=100), None, None, rng).role == "candidate" for _ in range(2000))


@settings(max_examples=200)
@given(key=st.binary(min_size=1, max_size=40), low=st.integers(0, 10000), high=st.integers(0, 10000))
def test_a_sticky_key_on_the_candidate_stays_there_as_the_weight_grows(key: bytes, low: int, high: int) -> None:
    low, high = sorted((low, high))
    rng = random.Random(0)
    before = choose(compiled(candidateWeight=low / 100, stickiness={"header": "x-card"}), None, key, rng)
    after = choose(compiled(candidateWeight=high / 100, stickiness={"header": "x-card"}), None, key, rng)
    if before.role == "candidate":
        assert after.role == "candidate"


def test_a_sticky_key_gets_the_same_version_every_time() -> None:
    r, rng = compiled(candidateWeight=50, stickiness={"cookie": "session"}), random.Random(3)
    for key in (b"alice", b"bob", b"c000042"):
        assert len({choose(r, None, key, rng).role for _ in range(50)}) == 1


def test_sticky_shares_follow_the_weight() -> None:
    keys = [f"c{i:06d}".encode() for i in range(20_000)]
    salt = b"fraud/v2"
    share = sum(ring_point(k, salt) < threshold(2500) for k in keys) / len(keys)
    assert abs(share - 0.25) < 0.02


def test_the_preview_header_sends_to_the_candidate_whatever_the_weight() -> None:
    r = compiled(candidateWeight=0, previewHeader="x-flywheel-preview")
    assert choose(r, b"1", None, random.Random(4)).role == "candidate"
    assert choose(r, None, None, random.Random(4)).role == "stable"


def test_shadow_mirrors_only_what_the_stable_answers() -> None:
    r, rng = compiled(candidateWeight=50, shadowPercent=100), random.Random(5)
    for _ in range(500):
        choice = choose(r, None, None, rng)
        assert (choice.shadow is not None) == (choice.role == "stable")


def test_a_pin_names_the_route_backend_or_the_default_upstream() -> None:
    r = CompiledRoute.of(route(candidate={"version": "v2", "endpoint": "http://v2.test"}))
    assert pinned(r, "v2").backend.endpoint == "http://v2.test"
    assert pinned(r, "v7").backend.endpoint is None and pinned(r, "v7").role == "pinned"
    assert pinned(None, "v3").backend.version == "v3"
