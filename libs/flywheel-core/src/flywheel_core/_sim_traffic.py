"""Transactions over a time window: card holders' own spending plus fraud sessions on compromised cards.

Times are int64 microseconds since the epoch throughout (the parquet resolution); `sim.py` turns the
arrays into the transactions frame. A `Regime` holds what a scenario changes, so the history and every
live scenario run through the same code.

The simulated world lives on UTC: card holders sleep 00:00-06:00 UTC wherever they are, which keeps the
"night" signal (hour of day) meaningful without a time zone per card.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._sim_world import (
    CATEGORY_AMOUNT,
    CATEGORY_NAMES,
    FX,
    RISK_ATTRACTION,
    RISKY_COUNTRY,
    TRAVEL_WEIGHTS,
    World,
)

US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
US_PER_MINUTE = 60_000_000

# Relative activity of card holders by UTC hour (mean 1): quiet at night, peaks at lunch and evening.
LEGIT_HOURLY = np.array([0.25, 0.15, 0.1, 0.1, 0.12, 0.25, 0.5, 0.85, 1.1, 1.25, 1.35, 1.5,
                         1.6, 1.5, 1.35, 1.3, 1.35, 1.5, 1.65, 1.7, 1.5, 1.2, 0.85, 0.5])
LEGIT_HOURLY = LEGIT_HOURLY / LEGIT_HOURLY.mean()
NIGHT_OWL_HOURLY = np.sqrt(LEGIT_HOURLY) / np.sqrt(LEGIT_HOURLY).mean()
# Fraud sessions start around the clock but favour the hours card holders are asleep.
FRAUD_HOURLY = np.array([1.6, 1.7, 1.7, 1.6, 1.5, 1.3, 1.0, 0.9, 0.8, 0.8, 0.8, 0.8,
                         0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.9, 0.9, 1.0, 1.2, 1.4])
FRAUD_HOURLY = FRAUD_HOURLY / FRAUD_HOURLY.mean()

MAX_TRIP_DAYS = 10
PATTERNS = ("card_testing", "abroad", "ecom_spree", "single", "travel_booking")
"""Fraud session patterns. `travel_booking` exists only under the `concept` scenario."""


@dataclass(frozen=True)
class Regime:
    """What a scenario changes about the world's behaviour (defaults: the history's behaviour)."""

    amount_scale: float = 1.0
    trip_rate_per_card_day: float = 0.012
    travel_weights: np.ndarray = field(default_factory=lambda: TRAVEL_WEIGHTS)
    foreign_ecom_share: float = 0.2
    compromise_scale: float = 1.0
    pattern_p: tuple[float, ...] = (0.25, 0.25, 0.2, 0.3, 0.0)


@dataclass
class Rows:
    """Column arrays of generated transactions (before ids, sorting and labels)."""

    card: np.ndarray
    time_us: np.ndarray
    channel: np.ndarray  # index into CHANNELS
    country: np.ndarray
    merchant: np.ndarray
    amount: np.ndarray
    is_fraud: np.ndarray

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        names = Rows.__dataclass_fields__
        return Rows(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in names})


def hourly_weight(start_us: int, end_us: int, profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hour-aligned bin edges over [start, end) and each bin's weight (days x relative activity)."""
    first = -(-start_us // US_PER_HOUR) * US_PER_HOUR
    edges = np.unique(np.concatenate([[start_us], np.arange(first, end_us, US_PER_HOUR), [end_us]]))
    hours = (edges[:-1] // US_PER_HOUR) % 24
    weights = np.diff(edges) / US_PER_DAY * profile[hours]
    return edges, weights


def sample_times(rng: np.random.Generator, start_us: int, end_us: int, n: int, profile: np.ndarray) -> np.ndarray:
    """`n` instants in [start, end) from the hour-of-day intensity `profile` (inverse CDF, exact)."""
    edges, weights = hourly_weight(start_us, end_us, profile)
    cum = np.cumsum(weights)
    u = rng.random(n) * cum[-1]
    b = np.minimum(np.searchsorted(cum, u, side="right"), len(weights) - 1)
    before = np.where(b > 0, cum[b - 1], 0.0)
    offset = (u - before) / weights[b] * (edges[b + 1] - edges[b])
    return np.minimum(edges[b] + offset.astype(np.int64), end_us - 1)


def pick_merchants(
    world: World, rng: np.random.Generator, country: np.ndarray, channel: str,
    categories: tuple[str, ...] | None = None, risk_weighted: bool = False,
) -> np.ndarray:
    """One merchant per row, in the row's country, serving `channel` (and in `categories`)."""
    eligible = world.merchants_serving(channel)
    if categories is not None:
        eligible &= np.isin(CATEGORY_NAMES[world.merchant_category], categories)
    weight = world.merchant_popularity * (RISK_ATTRACTION[world.merchant_risk] if risk_weighted else 1.0)
    out = np.empty(len(country), dtype=np.int64)
    for c in np.unique(country):
        rows = np.flatnonzero(country == c)
        pool = np.flatnonzero(eligible & (world.merchant_country == c))
        if len(pool) == 0:  # no such merchant there: the purchase happens in any country
            pool = np.flatnonzero(eligible)
        out[rows] = rng.choice(pool, size=len(rows), p=weight[pool] / weight[pool].sum())
    return out


def foreign_country(rng: np.random.Generator, home: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A country other than each row's home, drawn from `weights`."""
    out = np.empty(len(home), dtype=np.int64)
    for h in np.unique(home):
        rows = np.flatnonzero(home == h)
        w = weights.astype(float).copy()
        w[h] = 0.0
        out[rows] = rng.choice(len(w), size=len(rows), p=w / w.sum())
    return out


def amounts(world: World, rng: np.random.Generator, card: np.ndarray, merchant: np.ndarray,
            factor: np.ndarray | float, regime: Regime) -> np.ndarray:
    base = world.card_spend[card] * CATEGORY_AMOUNT[world.merchant_category[merchant]]
    noise = rng.lognormal(0.0, 0.55, size=len(card))
    local = base * noise * factor * FX[world.merchant_country[merchant]] * regime.amount_scale
    return np.round(np.maximum(local, 0.5), 2)


def legit(world: World, rng: np.random.Generator, start_us: int, end_us: int, regime: Regime) -> Rows:
    """Card holders' own transactions: habits, trips abroad, short shopping sprees."""
    _, weights = hourly_weight(start_us, end_us, LEGIT_HOURLY)
    counts = rng.poisson(world.card_rate * weights.sum())
    card = np.repeat(np.arange(len(world.card_ids)), counts)
    owl = world.card_night_owl[card]
    time_us = np.empty(len(card), dtype=np.int64)
    time_us[~owl] = sample_times(rng, start_us, end_us, int((~owl).sum()), LEGIT_HOURLY)
    time_us[owl] = sample_times(rng, start_us, end_us, int(owl.sum()), NIGHT_OWL_HOURLY)
    # Sprees: some purchases are followed by one or two more within the hour, as people shop.
    spree = np.flatnonzero(rng.random(len(card)) < 0.08)
    extra = rng.integers(1, 3, size=len(spree))
    follow_card = np.repeat(card[spree], extra)
    follow_time = np.repeat(time_us[spree], extra) + rng.integers(2, 45, size=extra.sum()) * US_PER_MINUTE
    card = np.concatenate([card, follow_card])
    time_us = np.concatenate([time_us, follow_time])
    keep = time_us < end_us
    card, time_us = card[keep], time_us[keep]

    abroad, destination = _trips(world, rng, start_us, end_us, regime, card, time_us)

    cum = np.cumsum(world.card_channel_p[card], axis=1)
    u = rng.random(len(card))
    channel = (u > cum[:, 0]).astype(np.int64) + (u > cum[:, 1])
    country = np.where(abroad, destination, world.card_home[card])
    ecom = channel == 1
    foreign_ecom = ecom & (rng.random(len(card)) < regime.foreign_ecom_share)
    country[foreign_ecom] = foreign_country(rng, world.card_home[card[foreign_ecom]], regime.travel_weights)
    country[ecom & ~foreign_ecom] = world.card_home[card[ecom & ~foreign_ecom]]

    merchant = np.empty(len(card), dtype=np.int64)
    for index, name in enumerate(("pos", "ecom", "atm")):
        rows = channel == index
        merchant[rows] = pick_merchants(world, rng, country[rows], name)
    amount = amounts(world, rng, card, merchant, 1.0, regime)
    return Rows(card, time_us, channel, country, merchant, amount, np.zeros(len(card), dtype=np.int64))


def _trips(world: World, rng: np.random.Generator, start_us: int, end_us: int, regime: Regime, card: np.ndarray,
           time_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which transactions happen on a trip abroad, and where: (abroad mask, destination country per row).

    Trip starts are a Poisson process per card at `trip_rate_per_card_day`, from MAX_TRIP_DAYS before the
    window (so trips already under way at its start are there too); each lasts 2-10 days. While a trip is
    under way the card's in-person spending happens at its destination; when a second trip starts before
    the first ends, the newer one counts. A Poisson process, not "at most one trip per window", so the
    share of spending abroad is the same in every window whatever its length: a 30-day history and a week
    of live traffic of the same regime look alike.
    """
    n_cards = len(world.card_ids)
    lead_us = MAX_TRIP_DAYS * US_PER_DAY
    span_days = (end_us - start_us + lead_us) / US_PER_DAY
    trip_card = np.repeat(np.arange(n_cards), rng.poisson(regime.trip_rate_per_card_day * span_days, size=n_cards))
    trip_start = rng.integers(start_us - lead_us, end_us, size=len(trip_card))
    trip_end = trip_start + rng.integers(2 * US_PER_DAY, MAX_TRIP_DAYS * US_PER_DAY, size=len(trip_card))
    destination = foreign_country(rng, world.card_home[trip_card], regime.travel_weights)
    if len(trip_card) == 0:
        return np.zeros(len(card), dtype=bool), np.zeros(len(card), dtype=np.int64)
    # The newest trip of the row's card that started at or before the row: one searchsorted over
    # (card, time) keys laid end to end, as feature_pipeline finds its window starts.
    stride = end_us - start_us + 2 * lead_us
    trip_key = trip_card * stride + (trip_start - start_us + lead_us)
    order = np.argsort(trip_key, kind="stable")
    row_key = card.astype(np.int64) * stride + (time_us - start_us + lead_us)
    newest = order[np.maximum(np.searchsorted(trip_key[order], row_key, side="right") - 1, 0)]
    abroad = (trip_card[newest] == card) & (trip_start[newest] <= time_us) & (time_us < trip_end[newest])
    return abroad, np.where(abroad, destination[newest], 0)


def fraud(world: World, rng: np.random.Generator, start_us: int, end_us: int, regime: Regime,
          compromise_rate_per_card_day: float) -> Rows:
    """Fraud sessions on compromised cards, one pattern per session."""
    span_days = (end_us - start_us) / US_PER_DAY
    n_sessions = rng.poisson(len(world.card_ids) * compromise_rate_per_card_day * regime.compromise_scale * span_days)
    session_card = rng.integers(0, len(world.card_ids), size=n_sessions)
    p = np.asarray(regime.pattern_p, dtype=float)
    session_pattern = rng.choice(len(PATTERNS), size=n_sessions, p=p / p.sum())
    session_start = sample_times(rng, start_us, end_us, n_sessions, FRAUD_HOURLY)
    # The new pattern mimics the card holder's own rhythm, so it starts in daytime hours.
    new = session_pattern == PATTERNS.index("travel_booking")
    session_start[new] = sample_times(rng, start_us, end_us, int(new.sum()), LEGIT_HOURLY)
    parts = [_session_rows(world, rng, PATTERNS[k], session_card[session_pattern == k],
                           session_start[session_pattern == k], regime) for k in range(len(PATTERNS))]
    rows = Rows.concat(parts)
    keep = rows.time_us < end_us
    return Rows(**{name: getattr(rows, name)[keep] for name in Rows.__dataclass_fields__})


def _session_rows(world: World, rng: np.random.Generator, pattern: str, card: np.ndarray,
                  start: np.ndarray, regime: Regime) -> Rows:
    n = len(card)
    home = world.card_home[card]
    if pattern == "card_testing":
        # Small probes at digital-goods and gambling sites, then one or two large purchases.
        k_small = 2 + rng.poisson(2.0, size=n)
        k_big = rng.integers(1, 3, size=n)
        probe = _expand(rng, card, start, k_small, 1, 8)
        big_start = probe[1].reshape(-1)[np.cumsum(k_small) - 1] if n else start
        big = _expand(rng, card, big_start + 2 * US_PER_MINUTE, k_big, 2, 20)
        country_p = foreign_country(rng, world.card_home[probe[0]], np.ones(len(FX)))
        m_p = pick_merchants(world, rng, country_p, "ecom", ("digital_goods", "gambling"), risk_weighted=True)
        a_p = np.round(rng.uniform(1.0, 9.0, size=len(m_p)) * FX[world.merchant_country[m_p]], 2)
        country_b = world.card_home[big[0]]
        m_b = pick_merchants(world, rng, country_b, "ecom", ("electronics", "jewelry"), risk_weighted=True)
        a_b = amounts(world, rng, big[0], m_b, rng.uniform(1.5, 4.0, size=len(m_b)), regime)
        return _rows(world, np.concatenate([probe[0], big[0]]), np.concatenate([probe[1], big[1]]), 1,
                     np.concatenate([m_p, m_b]), np.concatenate([a_p, a_b]))
    if pattern == "abroad":
        # A cloned card cashed out in person in another country, often a risky one.
        c, t = _expand(rng, card, start, 2 + rng.poisson(2.0, size=n), 5, 40)
        risky = np.where(RISKY_COUNTRY, 0.15, 0.0) + TRAVEL_WEIGHTS
        country = foreign_country(rng, world.card_home[c], risky)
        atm = rng.random(len(c)) < 0.45
        m = np.empty(len(c), dtype=np.int64)
        m[atm] = pick_merchants(world, rng, country[atm], "atm", risk_weighted=True)
        m[~atm] = pick_merchants(world, rng, country[~atm], "pos", ("electronics", "jewelry", "retail"), True)
        a = amounts(world, rng, c, m, rng.uniform(1.5, 4.5, size=len(c)), regime)
        return _rows(world, c, t, np.where(atm, 2, 0), m, a)
    if pattern == "ecom_spree":
        c, t = _expand(rng, card, start, 2 + rng.poisson(1.5, size=n), 2, 30)
        country = np.where(rng.random(len(c)) < 0.5, world.card_home[c],
                           foreign_country(rng, world.card_home[c], TRAVEL_WEIGHTS))
        m = pick_merchants(world, rng, country, "ecom", ("electronics", "jewelry", "digital_goods", "travel"), True)
        a = amounts(world, rng, c, m, rng.uniform(1.5, 5.0, size=len(c)), regime)
        return _rows(world, c, t, 1, m, a)
    if pattern == "single":
        # One unremarkable-looking online purchase: the hard cases.
        country = np.where(rng.random(n) < 0.6, home, foreign_country(rng, home, TRAVEL_WEIGHTS))
        m = pick_merchants(world, rng, country, "ecom", risk_weighted=True)
        a = amounts(world, rng, card, m, rng.uniform(1.0, 2.5, size=n), regime)
        return _rows(world, card, start, 1, m, a)
    # travel_booking (concept scenario only): domestic, daytime, travel-sized online bookings at
    # ordinary merchants, spaced out: none of the history's fraud signals.
    c, t = _expand(rng, card, start, rng.integers(1, 3, size=n), 60, 300)
    m = pick_merchants(world, rng, world.card_home[c], "ecom", ("travel",))
    a = amounts(world, rng, c, m, rng.uniform(0.8, 2.0, size=len(c)), regime)
    return _rows(world, c, t, 1, m, a)


def _expand(rng: np.random.Generator, card: np.ndarray, start: np.ndarray, k: np.ndarray,
            min_gap_minutes: int, max_gap_minutes: int) -> tuple[np.ndarray, np.ndarray]:
    """`k[i]` transactions of card i from start[i], with random gaps between consecutive ones."""
    cards = np.repeat(card, k)
    gaps = rng.integers(min_gap_minutes * US_PER_MINUTE, max_gap_minutes * US_PER_MINUTE, size=int(k.sum()))
    first = np.cumsum(k) - k
    gaps[first] = 0  # each session's first transaction is at its start
    offsets = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first], k)
    return cards, np.repeat(start, k) + offsets


def _rows(world: World, card: np.ndarray, time_us: np.ndarray, channel: np.ndarray | int,
          merchant: np.ndarray, amount: np.ndarray) -> Rows:
    channel = np.broadcast_to(np.asarray(channel, dtype=np.int64), card.shape).copy()
    return Rows(card.astype(np.int64), time_us.astype(np.int64), channel, world.merchant_country[merchant],
                merchant, amount, np.ones(len(card), dtype=np.int64))

