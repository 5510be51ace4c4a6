"""The label store's performance window: a fair sample when the classes' labels come at different delays."""

import numpy as np

from flywheel_drift._labels import LabelStore
from flywheel_drift._payloads import Label


def _store(tmp_path, n: int, fraud_every: int = 10) -> tuple[LabelStore, list[str], np.ndarray]:
    store = LabelStore(tmp_path, durable=False)
    keys = [f"t{i:05d}" for i in range(n)]
    truth = np.array([1 if i % fraud_every == fraud_every - 1 else 0 for i in range(n)])  # the newest is a fraud
    for i, key in enumerate(keys):  # one prediction a second, scored 0.9 when fraud
        store.add_predictions("fraud", "1", [key], np.array([0.9 if truth[i] else 0.1]), time=float(i))
    return store, keys, truth


def _label(store: LabelStore, keys: list[str], truth: np.ndarray, upto: int, cls: int, now: float) -> None:
    store.add_labels([Label(k, int(t)) for k, t in zip(keys[:upto], truth[:upto], strict=True) if t == cls], now)


def test_the_window_ends_where_the_slower_class_has_labels_not_where_labels_last_came(tmp_path):
    # Frauds are known for the first 900 predictions, legitimate rows (later) for the first 500 only: the labels
    # that came last are frauds 500-900, and a window of them would be nearly all fraud.
    store, keys, truth = _store(tmp_path, 1000)
    _label(store, keys, truth, 500, 0, now=10_000.0)
    _label(store, keys, truth, 900, 1, now=20_000.0)
    y, p = store.recent_labelled("fraud", "1", limit=200)
    assert len(y) == 200 and y.mean() == truth[300:500].mean() == 0.1  # predictions 300-499, by prediction time
    assert np.array_equal(p > 0.5, y == 1)


def test_with_every_label_in_the_window_is_the_newest_predictions_up_to_each_class_newest(tmp_path):
    store, keys, truth = _store(tmp_path, 400)  # the newest prediction (399) is a fraud, the newest legitimate 398
    _label(store, keys, truth, 400, 1, now=1.0)
    _label(store, keys, truth, 400, 0, now=2.0)
    y, _ = store.recent_labelled("fraud", "1", limit=1000)
    assert len(y) == 399 and y.sum() == truth[:399].sum()
    y, _ = store.recent_labelled("fraud", "1", limit=100)
    assert list(y) == list(truth[299:399][::-1])


def test_one_class_labelled_so_far_gives_that_class_and_nothing_labelled_gives_nothing(tmp_path):
    store, keys, truth = _store(tmp_path, 100)
    assert len(store.recent_labelled("fraud", "1", limit=50)[0]) == 0
    _label(store, keys, truth, 100, 1, now=1.0)
    y, _ = store.recent_labelled("fraud", "1", limit=50)
    assert len(y) == truth.sum() and set(y) == {1}  # evaluate() then waits for the other class
    assert len(store.recent_labelled("fraud", "2", limit=50)[0]) == 0


def test_predictions_added_in_a_group_are_committed_once_at_its_end_or_not_at_all(tmp_path):
    store = LabelStore(tmp_path, durable=False)
    with store.grouped():
        assert store.add_predictions("fraud", "1", ["a", "b"], np.array([0.1, 0.9]), time=1.0) == 2
        assert store.add_predictions("fraud", "1", ["b", "c"], np.array([0.9, 0.2]), time=2.0) == 1  # b: seen
    assert store.totals("fraud", "1") == (3, 0)
    try:
        with store.grouped():
            store.add_predictions("fraud", "1", ["d"], np.array([0.5]), time=3.0)
            raise RuntimeError("the analysis failed")
    except RuntimeError:
        pass
    assert store.totals("fraud", "1") == (3, 0)
    assert store.add_predictions("fraud", "1", ["d"], np.array([0.5]), time=3.0) == 1  # outside a group: as before
