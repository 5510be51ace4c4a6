"""Seeded simulator of card transactions with delayed fraud labels: the history and live traffic.

Cards have a home country, a typical spend, an activity rate and channel habits; merchants have a
category, a country and a risk level (`_sim_world`). Card holders shop near home, sometimes in bursts,
and take trips abroad. Compromised cards carry fraud sessions (`_sim_traffic`): card testing (small
online probes then large purchases), cash-out abroad (often in risky countries), online sprees at risky
merchants, and single unremarkable online purchases (the hard cases). About 2 % of transactions are fraud.

Labels are delayed. `label_timestamp` is when the label becomes known:

- fraud: the chargeback, `event + d` with d lognormal (median 2 days, sigma 0.6), clipped to
  [1 hour, chargeback window - 1 minute];
- legitimate: the moment the chargeback window (7 simulated days) closes with no chargeback, i.e.
  `event + 7 days`. Before then a legitimate transaction is *unlabelled*, not "known good".

The time scale is compressed (real chargeback windows are months) so a history of weeks has labels to learn
from. Live traffic (`generate_live`) continues after the history with the same cards and merchants,
under a named scenario (`SCENARIOS`).

CLI:
    python -m flywheel_core.sim history --out DIR [--size small|default] [--seed N] [--start DATE]
    python -m flywheel_core.sim live --scenario NAME --n N [--out FILE.jsonl] [--data DIR]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from . import _sim_traffic as traffic
from . import feature_pipeline
from ._sim_world import CATEGORY_NAMES, CHANNELS, COUNTRY_CODES, CURRENCIES, TRAVEL_WEIGHTS, World, build_world

TRANSACTION_COLUMNS = (
    "transaction_id", "card_id", "merchant_id", "amount", "currency", "country", "merchant_category",
    "channel", "event_timestamp", "is_fraud", "label_timestamp",
)
SIMULATION_FILE = "simulation.json"
"""Written next to the history: the size, seed and window, so `live` continues the same world."""
LEAD_IN_US = traffic.US_PER_DAY
"""Simulated before every window (history or live) and dropped: fraud sessions (at most a few hours) and
shopping sprees that began before the window reach into it, as in a world that did not begin with it."""


@dataclass(frozen=True)
class SimConfig:
    """A simulated world and its history window. `start` is 00:00 UTC of the history's first day."""

    n_cards: int
    n_merchants: int
    days: int
    start: datetime
    seed: int = 7
    txn_rate_per_card_day: float = 0.6
    compromise_rate_per_card_day: float = 0.0035
    chargeback_window_days: float = 7.0
    fraud_label_delay_median_days: float = 2.0
    fraud_label_delay_sigma: float = 0.6

    @property
    def end(self) -> datetime:
        """The end of the history (exclusive) and the default start of live traffic."""
        return self.start + timedelta(days=self.days)


PRESETS: dict[str, dict[str, int]] = {
    "small": {"n_cards": 300, "n_merchants": 160, "days": 50},  # ~10k rows: unit tests, in well under a second
    "default": {"n_cards": 2000, "n_merchants": 500, "days": 60},  # ~82k rows: `make up`, a few seconds
}
"""Sizes. Every history is long enough that its newest labelled rows (the trainer's validation and test
splits, the newest 30 % of rows at least `chargeback_window_days` old, where a model's drift reference comes
from) have the longest feature window, 30 days, of history behind them: (days - 7) x 0.7 >= 30. A shorter
history leaves those windows still filling (amount_mean_30d over 16-23 days of a 30-day history, 0-7 of a
14-day one), so the reference differs from live traffic for that reason alone and unchanged traffic drifts."""

_COVARIATE_TRAVEL = TRAVEL_WEIGHTS * np.where(np.isin(COUNTRY_CODES, ["MX", "BR", "SG", "AU", "CA"]), 6.0, 1.0)
SCENARIOS: dict[str, tuple[str, traffic.Regime]] = {
    "none": ("the history's behaviour continues", traffic.Regime()),
    "covariate": (
        "holiday season: many more cards abroad, towards a new country mix, more foreign online shopping, "
        "amounts inflated 1.5x; fraud behaves as before",
        traffic.Regime(amount_scale=1.5, trip_rate_per_card_day=0.1, travel_weights=_COVARIATE_TRAVEL,
                       foreign_ecom_share=0.45),
    ),
    "prior": (
        "a fraud wave: the same fraud patterns, 5x as many compromised cards",
        traffic.Regime(compromise_scale=5.0),
    ),
    "concept": (
        "a new fraud pattern: domestic daytime travel bookings at ordinary merchants, none of the "
        "history's fraud signals; the old patterns continue at a lower rate",
        traffic.Regime(compromise_scale=1.5, pattern_p=(0.12, 0.14, 0.08, 0.06, 0.6)),
    ),
}
"""Live traffic scenarios: name -> (what changes, the regime that makes it happen)."""


def preset(size: str = "default", seed: int = 7, start: datetime | str | None = None) -> SimConfig:
    """The named size. Without `start` the history ends at today's 00:00 UTC, so it is fresh for Feast."""
    if size not in PRESETS:
        raise ValueError(f"unknown size '{size}': expected one of {', '.join(PRESETS)}")
    days = PRESETS[size]["days"]
    if start is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=days)
    return SimConfig(**PRESETS[size], start=_utc(start), seed=seed)


def world(config: SimConfig) -> World:
    return build_world(config.n_cards, config.n_merchants, config.txn_rate_per_card_day, config.seed)


def generate_history(config: SimConfig) -> pd.DataFrame:
    """The transaction history over [config.start, config.end), sorted by time."""
    w = world(config)
    rng = np.random.default_rng([config.seed, 1])
    start_us, end_us = _us(config.start), _us(config.end)
    rows = _simulate(w, rng, start_us, end_us, traffic.Regime(), config)
    ids = np.array([f"t{i:010d}" for i in range(1, len(rows.card) + 1)])
    return _frame(w, rows, ids, rng, config)


def generate_live(config: SimConfig, scenario: str = "none", n: int = 1000, start: datetime | str | None = None,
                  seed: int = 0) -> pd.DataFrame:
    """`n` live transactions from `start` (default: the end of the history) under `scenario`.

    Same cards and merchants as the history of `config`; `seed` varies the traffic only. Transaction
    ids are random 10-digit numbers from 1000000000 up, so they never collide with the history's.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario '{scenario}': expected one of {', '.join(SCENARIOS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    regime = SCENARIOS[scenario][1]
    w = world(config)
    rng = np.random.default_rng([config.seed, 2, seed, list(SCENARIOS).index(scenario)])
    start_us = _us(_utc(start) if start is not None else config.end)
    per_day = w.card_rate.sum() * 1.12 + config.n_cards * config.compromise_rate_per_card_day * 20
    span_us = int(max(n, 1) / per_day * 1.5 * traffic.US_PER_DAY) + traffic.US_PER_HOUR
    while True:
        rows = _simulate(w, rng, start_us, start_us + span_us, regime, config)
        if len(rows.card) >= n:
            break
        span_us *= 2
    first = np.argsort(rows.time_us, kind="stable")[:n]
    rows = traffic.Rows(**{name: getattr(rows, name)[first] for name in traffic.Rows.__dataclass_fields__})
    return _frame(w, rows, _unique_ids(rng, n), rng, config)


def _unique_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` distinct live transaction ids, `t` + 10 digits starting 1-9 (history ids start with 0)."""
    values: list[int] = []
    seen: set[int] = set()
    while len(values) < n:
        for v in rng.integers(1_000_000_000, 10_000_000_000, size=n - len(values)).tolist():
            if v not in seen:
                seen.add(v)
                values.append(v)
    return np.array([f"t{v:010d}" for v in values])


def _simulate(w: World, rng: np.random.Generator, start_us: int, end_us: int, regime: traffic.Regime,
              config: SimConfig) -> traffic.Rows:
    """Transactions in [start, end), drawn from LEAD_IN_US earlier so the window opens mid-stream."""
    rows = traffic.Rows.concat([
        traffic.legit(w, rng, start_us - LEAD_IN_US, end_us, regime),
        traffic.fraud(w, rng, start_us - LEAD_IN_US, end_us, regime, config.compromise_rate_per_card_day),
    ])
    keep = rows.time_us >= start_us
    return traffic.Rows(**{name: getattr(rows, name)[keep] for name in traffic.Rows.__dataclass_fields__})


def _frame(w: World, rows: traffic.Rows, ids: np.ndarray, rng: np.random.Generator, config: SimConfig) -> pd.DataFrame:
    time_us = _untie(rows.card, rows.time_us.copy())
    order = np.lexsort((rows.card, time_us))
    window_us = int(config.chargeback_window_days * traffic.US_PER_DAY)
    delay_days = rng.lognormal(np.log(config.fraud_label_delay_median_days), config.fraud_label_delay_sigma, len(order))
    delay_us = np.clip((delay_days * traffic.US_PER_DAY).astype(np.int64), traffic.US_PER_HOUR,
                       window_us - traffic.US_PER_MINUTE)
    is_fraud = rows.is_fraud[order]
    event_us = time_us[order]
    merchant = rows.merchant[order]
    return pd.DataFrame({
        "transaction_id": ids,
        "card_id": w.card_ids[rows.card[order]].astype(object),
        "merchant_id": w.merchant_ids[merchant].astype(object),
        "amount": rows.amount[order].astype("float64"),
        "currency": CURRENCIES[rows.country[order]].astype(object),
        "country": COUNTRY_CODES[rows.country[order]].astype(object),
        "merchant_category": CATEGORY_NAMES[w.merchant_category[merchant]].astype(object),
        "channel": np.array(CHANNELS)[rows.channel[order]].astype(object),
        "event_timestamp": feature_pipeline.from_us(event_us),
        "is_fraud": is_fraud.astype("int64"),
        "label_timestamp": feature_pipeline.from_us(event_us + np.where(is_fraud == 1, delay_us, window_us)),
    }, columns=list(TRANSACTION_COLUMNS))


def _untie(card: np.ndarray, time_us: np.ndarray) -> np.ndarray:
    """Nudge same-card transactions at the same microsecond apart, so every card row has its own instant."""
    while True:
        order = np.lexsort((time_us, card))
        same = (card[order][1:] == card[order][:-1]) & (time_us[order][1:] <= time_us[order][:-1])
        if not same.any():
            return time_us
        time_us[order[1:][same]] = time_us[order[:-1][same]] + 1


def _utc(value: datetime | str) -> datetime:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def _us(value: datetime) -> int:
    return int(pd.Timestamp(value).value // 1000)


if __name__ == "__main__":
    from ._sim_cli import main

    sys.exit(main())
