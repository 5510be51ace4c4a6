"""Router stats: cumulative histograms a reader subtracts and reads quantiles from."""

from __future__ import annotations

import pytest

from flywheel_contracts import Histogram


def test_an_interval_is_the_difference_of_two_snapshots() -> None:
    earlier = Histogram(le=[0.01, 0.1, None], counts=[5, 1, 0], sum=0.1, count=6)
    later = Histogram(le=[0.01, 0.1, None], counts=[9, 6, 1], sum=1.5, count=16)
    delta = later.minus(earlier)
    assert delta.counts == [4, 5, 1] and delta.count == 10
    assert delta.quantile(0.5) == 0.1
    assert delta.quantile(0.3) == 0.01
    assert delta.quantile(1.0) is None  # in the +Inf bucket


def test_histograms_with_other_buckets_cannot_be_subtracted() -> None:
    with pytest.raises(ValueError, match="different buckets"):
        Histogram(le=[1.0, None], counts=[0, 0]).minus(Histogram(le=[2.0, None], counts=[0, 0]))


def test_an_empty_histogram_has_no_quantile() -> None:
    assert Histogram(le=[1.0, None], counts=[0, 0]).quantile(0.99) is None
