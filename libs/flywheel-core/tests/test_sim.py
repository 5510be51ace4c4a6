import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from flywheel_core import _sim_traffic as traffic
from flywheel_core import sim
from flywheel_core._sim_cli import main as cli
from flywheel_core._sim_world import build_world

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def config() -> sim.SimConfig:
    return sim.preset("small", seed=3, start=START)


@pytest.fixture(scope="module")
def history(config: sim.SimConfig) -> pd.DataFrame:
    return sim.generate_history(config)


def test_history_has_the_contract_columns_and_types(history: pd.DataFrame):
    assert tuple(history.columns) == sim.TRANSACTION_COLUMNS
    assert str(history["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert str(history["label_timestamp"].dtype) == "datetime64[us, UTC]"
    assert history["amount"].dtype == np.float64 and history["is_fraud"].dtype == np.int64
    assert history["transaction_id"].str.fullmatch(r"t\d{10}").all()
    assert history["card_id"].str.fullmatch(r"c\d{6}").all()
    assert history["merchant_id"].str.fullmatch(r"m\d{5}").all()
    assert set(history["channel"]) == {"pos", "ecom", "atm"}


def test_small_history_is_about_ten_thousand_rows_inside_its_window(config: sim.SimConfig, history: pd.DataFrame):
    assert 7000 <= len(history) <= 14000
    assert history["transaction_id"].is_unique
    assert history["event_timestamp"].min() >= pd.Timestamp(config.start)
    assert history["event_timestamp"].max() < pd.Timestamp(config.end)
    assert history["event_timestamp"].is_monotonic_increasing


def test_same_seed_gives_the_same_history_and_another_seed_does_not(config: sim.SimConfig, history: pd.DataFrame):
    pd.testing.assert_frame_equal(sim.generate_history(config), history)
    other = sim.generate_history(sim.preset("small", seed=4, start=START))
    assert len(other) != len(history) or not other["amount"].equals(history["amount"])


def test_fraud_is_rare_but_present(history: pd.DataFrame):
    assert 0.005 <= history["is_fraud"].mean() <= 0.04


def test_fraud_concentrates_where_the_documented_signals_are(history: pd.DataFrame):
    fraud_rate = history.groupby("channel")["is_fraud"].mean()
    assert fraud_rate["ecom"] > 3 * fraud_rate["pos"]
    night = history["event_timestamp"].dt.hour < 6
    assert history.loc[night, "is_fraud"].mean() > 2 * history.loc[~night, "is_fraud"].mean()


def test_fraud_labels_arrive_days_later_and_legitimate_ones_when_the_window_closes(
    config: sim.SimConfig, history: pd.DataFrame
):
    delay = history["label_timestamp"] - history["event_timestamp"]
    window = pd.Timedelta(days=config.chargeback_window_days)
    fraud = history["is_fraud"] == 1
    assert (delay[~fraud] == window).all()
    assert (delay[fraud] >= pd.Timedelta(hours=1)).all() and (delay[fraud] < window).all()
    assert pd.Timedelta(days=1) < delay[fraud].median() < pd.Timedelta(days=4)


def test_no_card_has_two_transactions_at_the_same_instant(history: pd.DataFrame):
    assert not history.duplicated(["card_id", "event_timestamp"]).any()


def test_live_traffic_continues_after_the_history_with_the_same_cards_and_merchants(
    config: sim.SimConfig, history: pd.DataFrame
):
    live = sim.generate_live(config, "none", n=400, seed=1)
    assert len(live) == 400 and live["transaction_id"].is_unique
    assert live["event_timestamp"].min() >= pd.Timestamp(config.end)
    assert set(live["card_id"]) <= set(sim.world(config).card_ids)
    assert set(live["merchant_id"]) <= set(sim.world(config).merchant_ids)
    assert not set(live["transaction_id"]) & set(history["transaction_id"])


@pytest.mark.parametrize("scenario", sorted(sim.SCENARIOS))
def test_every_scenario_generates_exactly_n_rows(config: sim.SimConfig, scenario: str):
    live = sim.generate_live(config, scenario, n=150, seed=2)
    assert len(live) == 150
    assert tuple(live.columns) == sim.TRANSACTION_COLUMNS


def test_prior_scenario_raises_the_fraud_rate_several_times(config: sim.SimConfig):
    base = sim.generate_live(config, "none", n=4000, seed=5)["is_fraud"].mean()
    wave = sim.generate_live(config, "prior", n=4000, seed=5)["is_fraud"].mean()
    assert wave > 2.5 * base


def test_covariate_scenario_inflates_amounts_and_moves_spending_abroad(config: sim.SimConfig):
    base = sim.generate_live(config, "none", n=3000, seed=6)
    shifted = sim.generate_live(config, "covariate", n=3000, seed=6)
    assert shifted["amount"].median() > 1.3 * base["amount"].median()
    home = dict(zip(sim.world(config).card_ids, sim.world(config).card_home, strict=True))
    codes = list(sim.COUNTRY_CODES)

    def abroad(frame: pd.DataFrame) -> float:
        return float((frame["country"].map(codes.index) != frame["card_id"].map(home)).mean())

    assert abroad(shifted) > 1.5 * abroad(base)


def test_concept_scenario_puts_fraud_where_the_history_had_almost_none(config: sim.SimConfig, history: pd.DataFrame):
    def travel_booking_fraud(frame: pd.DataFrame) -> float:
        rows = frame[(frame["merchant_category"] == "travel") & (frame["channel"] == "ecom")]
        return float(rows["is_fraud"].mean())

    live = sim.generate_live(config, "concept", n=4000, seed=7)
    assert travel_booking_fraud(live) > 4 * max(travel_booking_fraud(history), 0.005)


def test_unknown_scenario_and_size_are_refused_by_name(config: sim.SimConfig):
    with pytest.raises(ValueError, match="unknown scenario 'drift'"):
        sim.generate_live(config, "drift", n=1)
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        sim.preset("huge")


def test_cli_writes_history_tables_and_live_lines_that_continue_it(tmp_path, capsys):
    data = tmp_path / "data"
    assert cli(["history", "--out", str(data), "--size", "small", "--seed", "3", "--start", "2026-01-01"]) == 0
    for name in ("transactions.parquet", "card_activity.parquet", "merchant_risk.parquet", "simulation.json"):
        assert (data / name).is_file(), name
    out = tmp_path / "live.jsonl"
    assert cli(["live", "--scenario", "prior", "--n", "25", "--out", str(out), "--data", str(data)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 25
    assert rows[0]["event_timestamp"].startswith("2026-02-20T") and rows[0]["event_timestamp"].endswith("Z")
    assert {"transaction_id", "card_id", "merchant_id", "amount", "currency", "country", "merchant_category",
            "channel", "event_timestamp", "is_fraud"} <= rows[0].keys()
    capsys.readouterr()


def test_live_lines_start_where_the_history_on_disk_ends_even_from_an_older_preset(tmp_path, capsys):
    data = tmp_path / "data"
    assert cli(["history", "--out", str(data), "--size", "small", "--seed", "3", "--start", "2026-01-01"]) == 0
    meta = json.loads((data / "simulation.json").read_text())
    meta["end"] = "2026-01-31T00:00:00+00:00"  # as a history made when the small preset was 30 days long
    (data / "simulation.json").write_text(json.dumps(meta))
    out = tmp_path / "live.jsonl"
    assert cli(["live", "--n", "5", "--out", str(out), "--data", str(data)]) == 0
    first = json.loads(out.read_text().splitlines()[0])["event_timestamp"]
    assert first.startswith("2026-01-31T"), first
    capsys.readouterr()


def test_the_default_data_set_depends_on_its_seed_not_on_the_day_it_is_made():
    """`make data` dates the history to end today; what it holds must not move with the date (only the
    timestamps shift). Pinned figures of the default world (seed 7): a change here changes every figure in
    docs/benchmarks.md and every model trained on the default data, so it must be deliberate."""
    frames = []
    for start in ("2026-10-31", "2025-03-01", "2027-02-27"):
        history = sim.generate_history(sim.preset("default", start=start))
        offset = history["event_timestamp"] - pd.Timestamp(start, tz="UTC")
        frames.append(history.drop(columns=["event_timestamp", "label_timestamp"]).assign(
            offset=offset, label_offset=history["label_timestamp"] - pd.Timestamp(start, tz="UTC")))
    for other in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], other)
    history = frames[0]
    assert (len(history), int(history["is_fraud"].sum())) == (82122, 1527)
    assert round(float(history["amount"].sum()), 2) == 18557395.24
    assert (history["card_id"].nunique(), history["merchant_id"].nunique()) == (1989, 499)
    live = sim.generate_live(sim.preset("default", start="2026-10-31"), "none", 100)
    assert (live["transaction_id"].iloc[0], round(float(live["amount"].sum()), 2)) == ("t7185840905", 45909.55)


@pytest.mark.parametrize("size", sorted(sim.PRESETS))
def test_the_rows_a_model_is_validated_and_referenced_on_have_30_days_of_history_behind_them(size: str):
    """The trainer holds out the newest 30 % of rows whose labels are known (at least the chargeback window
    old) and takes its drift reference from them; their 30-day features must not be still filling."""
    config = sim.preset(size, start=START)
    labelled_days = config.days - config.chargeback_window_days
    assert labelled_days * (1 - 0.3) >= 30


def test_the_share_of_spending_abroad_does_not_depend_on_the_window_length():
    """Trips are a Poisson process, so a week of live traffic and a six-week history of the same regime spend
    abroad alike: 1 - E[exp(-rate x duration)] of in-person spending, duration uniform on 2-10 days."""
    world = build_world(20_000, 500, 0.6, seed=5)
    regime = traffic.Regime()
    rate, low, high = regime.trip_rate_per_card_day, 2.0, traffic.MAX_TRIP_DAYS
    expected = 1 - (np.exp(-rate * low) - np.exp(-rate * high)) / (rate * (high - low))
    for days in (7, 42):
        rows = traffic.legit(world, np.random.default_rng(1), 0, days * traffic.US_PER_DAY, regime)
        in_person = rows.channel != 1
        abroad = float((rows.country[in_person] != world.card_home[rows.card[in_person]]).mean())
        assert abroad == pytest.approx(expected, abs=0.005), days
