"""The drift service's feature lists come from the input contract (flywheel_core.schema), not a copy."""

import subprocess
import sys
import textwrap

from flywheel_core import schema
from flywheel_drift import load_settings
from flywheel_drift._features import CLOCK_FEATURES, DEFAULT_ONLINE, DEFAULT_SKIPPED


def test_the_clock_columns_are_still_schema_features():
    assert set(CLOCK_FEATURES) <= set(schema.ON_DEMAND_FEATURES)


def test_defaults_skip_the_ids_and_the_clock_and_watch_every_other_numeric_feature_online():
    assert DEFAULT_SKIPPED == ("card_id", "merchant_id", "hour_sin", "hour_cos", "is_night")
    assert set(DEFAULT_ONLINE) | set(CLOCK_FEATURES) == set(schema.NUMERIC_FEATURES)
    settings = load_settings()
    assert settings.skip_features == DEFAULT_SKIPPED and settings.online_features == DEFAULT_ONLINE


def test_a_feature_added_to_the_schema_is_watched_online_without_touching_the_drift_service():
    script = textwrap.dedent("""
        from flywheel_core import schema
        schema.NUMERIC_FEATURES = schema.NUMERIC_FEATURES + ("new_feature_7d",)
        schema.HASHED_COLUMNS = {**schema.HASHED_COLUMNS, "device_id": 65536}
        from flywheel_drift import load_settings
        settings = load_settings()
        assert "new_feature_7d" in settings.online_features, settings.online_features
        assert "device_id" in settings.skip_features, settings.skip_features
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
