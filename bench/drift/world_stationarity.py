"""Is unchanged traffic stationary before any service touches it? The batch pipeline alone, no stack.

The default world's history and 10,000 `none` live transactions go through `feature_pipeline.card_activity`;
each transaction gets its card's point-in-time values (the previous row, as training joins them). Live
traffic is then compared with the region of the history that a model's drift reference comes from (the
newest labelled rows: 14 to 7 days before the history ends), with the KS test the drift service uses, over
all 10,000 rows and over five 2,000-row windows; and the history's own last week with that same region.
Small p-values here are the simulated world moving, not a serving skew.

`--worlds N` repeats the comparison over N worlds (seeds 1..N) and reports the share of p < 0.05 (0.05 if
the world is stationary and the rows independent), once over rows and once over one value per card (its mean
in each period). A share far above 0.05 over rows that falls to about 0.05 per card is not the world moving:
each card contributes many rows whose slow features (a 30-day mean) are nearly equal, so the rows are not
the independent draws a per-row test assumes.

    services/drift/.venv/bin/python bench/drift/world_stationarity.py              # the default world (seed 7)
    services/drift/.venv/bin/python bench/drift/world_stationarity.py --worlds 12
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from scipy import stats

from flywheel_core import feature_pipeline as fp
from flywheel_core import sim

FEATURES = ("txn_count_1h", "txn_count_24h", "amount_sum_24h", "amount_mean_30d", "distinct_countries_24h")
DAY_US = 86_400_000_000


def regions(seed: int = 7, live_rows: int = 10_000) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """(reference region, the history's last week, live), each row with its point-in-time card features."""
    config = sim.preset("default", seed=seed, start="2026-11-01")
    frame = pd.concat([sim.generate_history(config), sim.generate_live(config, "none", live_rows)], ignore_index=True)
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
    return reference, last_week, live, {"seed": seed, "history_days": config.days}


def ks_p(a: pd.Series, b: pd.Series) -> float:
    return float(stats.ks_2samp(a.dropna(), b.dropna()).pvalue)


def one_world(seed: int = 7) -> dict:
    reference, last_week, live, meta = regions(seed)
    out: dict = {**meta, "rows": {"reference": len(reference), "history_last_week": len(last_week), "live": len(live)}}
    for name in FEATURES:
        ref = reference[name]
        out[name] = {
            "mean": {"reference": round(float(ref.mean()), 3),
                     "history_last_week": round(float(last_week[name].mean()), 3),
                     "live": round(float(live[name].mean()), 3)},
            "ks_p_live": float(f"{ks_p(ref, live[name]):.2g}"),
            "ks_p_history_last_week": float(f"{ks_p(ref, last_week[name]):.2g}"),
            "ks_p_live_windows_of_2000": [float(f"{ks_p(ref, w[name]):.2g}") for w in np.array_split(live, 5)],
        }
    return out


def many_worlds(n: int) -> dict:
    """Share of worlds whose live traffic (and last history week) differs from the reference at p < 0.05."""
    p: dict[str, dict[str, list[float]]] = {name: {k: [] for k in ("live", "last_week", "live_per_card")}
                                            for name in FEATURES}
    for seed in range(1, n + 1):
        reference, last_week, live, _ = regions(seed)
        per_card = {name: frame.groupby("card_id")[list(FEATURES)].mean() for name, frame in
                    (("reference", reference), ("live", live))}
        for name in FEATURES:
            p[name]["live"].append(ks_p(reference[name], live[name]))
            p[name]["last_week"].append(ks_p(reference[name], last_week[name]))
            p[name]["live_per_card"].append(ks_p(per_card["reference"][name], per_card["live"][name]))
    return {"worlds": n, **{name: {f"share_p_below_0.05_{k}": round(float(np.mean(np.array(v) < 0.05)), 2)
                                   for k, v in by.items()} for name, by in p.items()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, default=0, help="also summarise this many worlds (seeds 1..N)")
    args = parser.parse_args()
    result = one_world()
    if args.worlds:
        result["many_worlds"] = many_worlds(args.worlds)
    print(json.dumps(result, indent=2))
