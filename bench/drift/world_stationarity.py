"""Is unchanged traffic stationary before any service touches it? The batch pipeline alone, no stack.

The default world's history and 10,000 `none` live transactions go through `feature_pipeline.card_activity`;
each transaction gets its card's point-in-time values (the previous row, as training joins them). Live
traffic is then compared with the region of the history that a model's drift reference comes from (the
newest labelled rows: 14 to 7 days before the history ends), with the KS test the drift service uses, over
all 10,000 rows and over five 2,000-row windows; and the history's own last week with that same region.
Small p-values here are the simulated world moving, not a serving skew.

    services/drift/.venv/bin/python bench/drift/world_stationarity.py
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy import stats

from flywheel_core import feature_pipeline as fp
from flywheel_core import sim

FEATURES = ("txn_count_1h", "txn_count_24h", "amount_sum_24h", "amount_mean_30d", "distinct_countries_24h")
DAY_US = 86_400_000_000


def main() -> dict:
    config = sim.preset("default", start="2026-11-01")
    frame = pd.concat([sim.generate_history(config), sim.generate_live(config, "none", 10_000)], ignore_index=True)
    frame["_t"] = fp.to_us(frame["event_timestamp"])
    frame = frame.sort_values(["card_id", "_t", "transaction_id"], kind="mergesort").reset_index(drop=True)
    rows = fp.card_activity(frame)
    rows["_t"] = fp.to_us(rows["event_timestamp"])
    rows = rows.sort_values(["card_id", "_t"], kind="mergesort").reset_index(drop=True)
    frame = pd.concat([frame, rows.groupby("card_id")[list(FEATURES)].shift(1)], axis=1)
    end = int(fp.to_us(pd.Series([config.end]))[0])
    reference = frame[(frame["_t"] >= end - 14 * DAY_US) & (frame["_t"] < end - 7 * DAY_US)]
    last_week = frame[(frame["_t"] >= end - 7 * DAY_US) & (frame["_t"] < end)]
    live = frame[frame["_t"] >= end].sort_values("_t")
    out: dict = {"rows": {"reference": len(reference), "history_last_week": len(last_week), "live": len(live)}}
    for name in FEATURES:
        ref = reference[name].dropna()
        out[name] = {
            "mean": {"reference": round(float(ref.mean()), 3),
                     "history_last_week": round(float(last_week[name].mean()), 3),
                     "live": round(float(live[name].mean()), 3)},
            "ks_p_live": float(f"{stats.ks_2samp(ref, live[name].dropna()).pvalue:.2g}"),
            "ks_p_history_last_week": float(f"{stats.ks_2samp(ref, last_week[name].dropna()).pvalue:.2g}"),
            "ks_p_live_windows_of_2000": [float(f"{stats.ks_2samp(ref, w[name].dropna()).pvalue:.2g}")
                                          for w in np.array_split(live, 5)],
        }
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
