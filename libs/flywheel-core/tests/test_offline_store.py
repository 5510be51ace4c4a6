"""The one check every point-in-time read makes: one output row per entity row (the real Feast store is read in
services/trainer and services/features tests; here, what the check refuses)."""

import pandas as pd
import pytest

from flywheel_core.offline_store import OfflineStoreError, historical_features


class Store:
    def __init__(self, answer: pd.DataFrame) -> None:
        self.answer = answer

    def get_feature_service(self, name):
        return name

    def get_historical_features(self, *, entity_df, features):
        answer = self.answer

        class Job:
            def to_df(self):
                return answer

        return Job()


ENTITIES = pd.DataFrame({"transaction_id": ["a", "b", "c"]})


def test_one_row_per_entity_row_is_returned_as_is():
    frame = ENTITIES.assign(x=[1, 2, 3])
    assert historical_features(Store(frame), ENTITIES, "fraud_v1", key="transaction_id") is frame


@pytest.mark.parametrize(("answer", "says"), [
    (ENTITIES.iloc[:2], "returned 2 rows for 3 entity rows"),
    (pd.DataFrame({"transaction_id": ["a", "a", "c"]}), "with repeated transaction_id"),
])
def test_a_dropped_or_repeated_row_is_refused(answer, says):
    with pytest.raises(OfflineStoreError, match=says):
        historical_features(Store(answer), ENTITIES, "fraud_v1", key="transaction_id")
