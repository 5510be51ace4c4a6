"""Which model-input columns the drift service tests how, derived from the input contract
(`flywheel_core.schema`) rather than restated, so a feature added to or renamed in the schema changes
these lists with it.

The schema says which columns are numeric and how many buckets each hashed column has; what it cannot
say is which columns encode the clock. Those three names are the one thing kept here, and a test checks
that the schema still has them.
"""

from __future__ import annotations

from flywheel_core import schema

MAX_CHI2_BUCKETS = 256
"""Hashed columns with more buckets are ids (card, merchant): chi-square over thousands of sparse cells
has no power and a new card is not drift, so they are not tested."""

CLOCK = ("hour_sin", "hour_cos")
"""The angle of the hour of day (on-demand features): the reference is hour-matched on it."""

CLOCK_FEATURES = (*CLOCK, "is_night")
"""Columns that follow the clock: any window shorter than a day differs from the reference in them."""

ID_COLUMNS = tuple(name for name, buckets in schema.HASHED_COLUMNS.items() if buckets > MAX_CHI2_BUCKETS)
"""Hashed id columns (card_id, merchant_id today)."""

DEFAULT_SKIPPED = ID_COLUMNS + tuple(name for name in schema.NUMERIC_FEATURES if name in CLOCK_FEATURES)
"""Not tested by default: the id columns and the clock."""

DEFAULT_ONLINE = tuple(name for name in schema.NUMERIC_FEATURES if name not in CLOCK_FEATURES)
"""The online detector's default columns: every numeric feature that does not follow the clock."""
