import numpy as np
import pytest
from scipy import stats as scipy_stats

from flywheel_drift import _stats


def test_cvm_matches_scipy_on_continuous_data():
    rng = np.random.default_rng(0)
    x, y = np.sort(rng.normal(size=2000)), np.sort(rng.normal(0.1, 1, 300))
    reference = scipy_stats.cramervonmises_2samp(x, y, method="asymptotic")
    t = _stats.cvm_statistic(x, y)
    assert t == pytest.approx(reference.statistic, rel=1e-9)
    assert _stats.cvm_p_value(t, len(x), len(y)) == pytest.approx(reference.pvalue, rel=1e-6)


def test_cvm_is_not_fooled_by_ties_on_a_count_feature():
    rng = np.random.default_rng(1)
    ref, cur = np.sort(rng.poisson(1.0, 5000).astype(float)), rng.poisson(1.0, 1000).astype(float)
    assert _stats.numeric_test(ref, cur).p_value > 0.01  # rank formulas give p ~ 1e-8 here


def test_numeric_test_finds_a_small_shift_and_not_noise():
    rng = np.random.default_rng(2)
    ref = np.sort(rng.normal(size=5000))
    assert _stats.numeric_test(ref, rng.normal(0.3, 1, 500)).p_value < 1e-4
    assert _stats.numeric_test(ref, rng.normal(0.0, 1, 500)).p_value > 0.01


def test_chi_square_sees_a_changed_category_mix_and_pools_rare_cells():
    cats = np.array([1.0, 2.0, 3.0, 4.0])
    ref_counts = _stats.category_counts(np.repeat(cats, [500, 300, 190, 10]), cats)
    same = _stats.categorical_test(cats, ref_counts, np.repeat(cats, [50, 30, 19, 1]))
    moved = _stats.categorical_test(cats, ref_counts, np.repeat(cats, [20, 30, 49, 1]))
    assert same.p_value > 0.5 and same.test == "chi2"
    assert moved.p_value < 1e-6
    assert 0.2 < moved.distance < 0.4  # total variation


def test_unseen_categories_count_as_drift():
    cats = np.array([1.0, 2.0])
    ref_counts = _stats.category_counts(np.repeat(cats, [500, 500]), cats)
    assert _stats.categorical_test(cats, ref_counts, np.repeat([1.0, 2.0, 9.0], [40, 40, 20])).p_value < 1e-6


def test_benjamini_hochberg_q_values_reject_the_step_up_set():
    # Benjamini & Hochberg (1995), table 1 style: the largest k with p_(k) <= k alpha / m is 2 here.
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    q = _stats.bh_adjusted(p)
    assert [qi <= 0.05 for qi in q] == [True, True] + [False] * 8
    assert q[0] == pytest.approx(0.01) and q[1] == pytest.approx(0.04)
    assert q[2:5] == pytest.approx([0.084] * 3)  # monotone: step-up takes the minimum from the right
    assert _stats.bh_adjusted([]) == []


def test_cauchy_combination_of_equal_p_values_is_that_p_value():
    assert _stats.cauchy_combination([0.03, 0.03]) == pytest.approx(0.03, rel=1e-9)
    assert _stats.cauchy_combination([1e-20, 0.5]) == pytest.approx(2e-20, rel=1e-3)


def test_psi_is_zero_for_identical_and_large_for_a_big_shift():
    rng = np.random.default_rng(3)
    ref = np.sort(rng.normal(size=5000))
    edges = _stats.quantile_edges(ref)
    base = _stats.binned_proportions(ref, edges)
    assert _stats.psi(base, base) == 0.0
    assert _stats.psi(base, _stats.binned_proportions(rng.normal(1.0, 1, 2000), edges)) > 0.25
