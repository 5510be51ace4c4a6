"""The simulated world: countries, cards and merchants, drawn once from the population seed.

History and live traffic are both drawn against the same `World`, which is what lets live transactions
continue the history: same card ids, same merchants, same habits. Everything here is a plain numpy array
per attribute (one row per card or merchant), so traffic generation stays vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# country -> (currency, units of that currency per simulated "base" unit, weight as a card's home,
# weight as a travel destination, risky for fraud cash-out). Exchange rates are rough and fixed: amounts
# are stored in the local currency, as a card network would see them.
COUNTRIES: dict[str, tuple[str, float, float, float, bool]] = {
    "US": ("USD", 1.00, 0.34, 0.14, False),
    "GB": ("GBP", 0.79, 0.14, 0.10, False),
    "DE": ("EUR", 0.92, 0.12, 0.08, False),
    "FR": ("EUR", 0.92, 0.10, 0.12, False),
    "ES": ("EUR", 0.92, 0.07, 0.13, False),
    "IT": ("EUR", 0.92, 0.06, 0.10, False),
    "NL": ("EUR", 0.92, 0.04, 0.05, False),
    "CA": ("CAD", 1.36, 0.07, 0.07, False),
    "AU": ("AUD", 1.52, 0.04, 0.04, False),
    "CH": ("CHF", 0.88, 0.02, 0.05, False),
    "SG": ("SGD", 1.34, 0.00, 0.04, False),
    "MX": ("MXN", 17.1, 0.00, 0.08, True),
    "BR": ("BRL", 5.00, 0.00, 0.05, True),
    "RO": ("RON", 4.60, 0.00, 0.03, True),
}
COUNTRY_CODES = np.array(list(COUNTRIES))
CURRENCIES = np.array([spec[0] for spec in COUNTRIES.values()])
FX = np.array([spec[1] for spec in COUNTRIES.values()])
HOME_WEIGHTS = np.array([spec[2] for spec in COUNTRIES.values()])
TRAVEL_WEIGHTS = np.array([spec[3] for spec in COUNTRIES.values()])
RISKY_COUNTRY = np.array([spec[4] for spec in COUNTRIES.values()])

# category -> (channels it serves, typical amount in base units, share of merchants, base risk level).
# Risk level 0 low, 1 medium, 2 high: how much fraudsters favour the merchant.
CATEGORIES: dict[str, tuple[tuple[str, ...], float, float, int]] = {
    "grocery": (("pos",), 45.0, 0.20, 0),
    "restaurant": (("pos",), 32.0, 0.16, 0),
    "fuel": (("pos",), 55.0, 0.08, 0),
    "retail": (("pos", "ecom"), 70.0, 0.16, 0),
    "electronics": (("pos", "ecom"), 260.0, 0.07, 1),
    "jewelry": (("pos", "ecom"), 420.0, 0.03, 1),
    "travel": (("pos", "ecom"), 380.0, 0.06, 0),
    "digital_goods": (("ecom",), 25.0, 0.07, 1),
    "gambling": (("ecom",), 90.0, 0.03, 2),
    "cash": (("atm",), 120.0, 0.14, 0),
}
CATEGORY_NAMES = np.array(list(CATEGORIES))
CATEGORY_AMOUNT = np.array([spec[1] for spec in CATEGORIES.values()])
CHANNELS = ("pos", "ecom", "atm")

# Fraudsters pick merchants with these relative weights by risk level.
RISK_ATTRACTION = np.array([1.0, 4.0, 12.0])


@dataclass(frozen=True)
class World:
    """Cards and merchants, one array entry per card / merchant."""

    card_ids: np.ndarray  # str
    card_home: np.ndarray  # country index
    card_spend: np.ndarray  # typical amount in base units
    card_rate: np.ndarray  # legitimate transactions per day
    card_channel_p: np.ndarray  # [cards, 3] probabilities of pos, ecom, atm
    card_night_owl: np.ndarray  # bool: shops around the clock (shift workers), blurring the night signal
    merchant_ids: np.ndarray  # str
    merchant_country: np.ndarray  # country index
    merchant_category: np.ndarray  # category index
    merchant_risk: np.ndarray  # 0 low, 1 medium, 2 high
    merchant_popularity: np.ndarray  # relative weight for legitimate customers

    def merchants_serving(self, channel: str) -> np.ndarray:
        """Boolean mask of merchants that accept `channel`."""
        serves = np.array([channel in CATEGORIES[name][0] for name in CATEGORY_NAMES])
        return serves[self.merchant_category]


def build_world(n_cards: int, n_merchants: int, txn_rate_per_card_day: float, seed: int) -> World:
    """Draw the population. Only `seed` and the sizes decide it, never the traffic seed."""
    rng = np.random.default_rng([seed, 0])
    n_countries = len(COUNTRY_CODES)

    card_home = rng.choice(n_countries, size=n_cards, p=HOME_WEIGHTS / HOME_WEIGHTS.sum())
    card_spend = rng.lognormal(mean=0.0, sigma=0.45, size=n_cards)
    # Gamma-distributed activity: most cards a few times a week, a few heavy users several times a day.
    card_rate = rng.gamma(shape=1.6, scale=txn_rate_per_card_day / 1.6, size=n_cards)
    card_channel_p = rng.dirichlet([12.0, 5.0, 1.5], size=n_cards)
    card_night_owl = rng.random(n_cards) < 0.12

    # Every country gets some merchants of every category, so any card can shop anywhere it travels.
    category_share = np.array([spec[2] for spec in CATEGORIES.values()])
    n_categories = len(CATEGORY_NAMES)
    base_country = np.repeat(np.arange(n_countries), n_categories)
    base_category = np.tile(np.arange(n_categories), n_countries)
    if n_merchants < len(base_country):
        raise ValueError(f"n_merchants must be at least {len(base_country)} (one per country and category)")
    rest = n_merchants - len(base_country)
    merchant_weights = HOME_WEIGHTS + 0.5 * TRAVEL_WEIGHTS
    merchant_country = np.concatenate(
        [base_country, rng.choice(n_countries, size=rest, p=merchant_weights / merchant_weights.sum())]
    )
    merchant_category = np.concatenate(
        [base_category, rng.choice(n_categories, size=rest, p=category_share / category_share.sum())]
    )
    order = rng.permutation(n_merchants)
    merchant_country, merchant_category = merchant_country[order], merchant_category[order]
    base_risk = np.array([spec[3] for spec in CATEGORIES.values()])[merchant_category]
    # Some merchants are riskier than their category (weak checks), a few safer.
    bump = rng.choice([-1, 0, 1], size=n_merchants, p=[0.1, 0.7, 0.2])
    merchant_risk = np.clip(base_risk + bump, 0, 2)
    merchant_popularity = rng.lognormal(mean=0.0, sigma=0.8, size=n_merchants)

    return World(
        card_ids=np.array([f"c{i:06d}" for i in range(1, n_cards + 1)]),
        card_home=card_home,
        card_spend=card_spend,
        card_rate=card_rate,
        card_channel_p=card_channel_p,
        card_night_owl=card_night_owl,
        merchant_ids=np.array([f"m{i:05d}" for i in range(1, n_merchants + 1)]),
        merchant_country=merchant_country,
        merchant_category=merchant_category,
        merchant_risk=merchant_risk,
        merchant_popularity=merchant_popularity,
    )
