import pandas as pd

from flywheel_core import schema
from flywheel_core.feature_pipeline import read_parquet
from flywheel_features._cli import main


def test_historical_command_writes_one_feature_row_per_entity_row(store, settings, transactions, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setenv("FLYWHEEL_FEATURES_REPO_PATH", str(settings.repo_path))
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(settings.data_dir))
    sample = transactions.head(50)
    entities = pd.DataFrame({
        "card_id": sample["card_id"], "merchant_id": sample["merchant_id"],
        "event_timestamp": schema.as_of(sample["event_timestamp"]), "amount": sample["amount"],
        "event_hour": sample["event_timestamp"].dt.hour.astype("int64"),
    })
    entities.to_parquet(tmp_path / "entities.parquet")
    argv = ["historical", "--entities", str(tmp_path / "entities.parquet"), "--out", str(tmp_path / "out.parquet")]
    assert main(argv) == 0
    out = read_parquet(tmp_path / "out.parquet")
    assert len(out) == 50
    assert set(schema.NUMERIC_FEATURES) <= set(out.columns)
    assert "wrote 50 rows" in capsys.readouterr().out


def test_a_missing_entity_column_is_a_clear_error_and_exit_code_1(store, settings, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLYWHEEL_FEATURES_REPO_PATH", str(settings.repo_path))
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(settings.data_dir))
    pd.DataFrame({"card_id": ["c000001"]}).to_parquet(tmp_path / "entities.parquet")
    argv = ["historical", "--entities", str(tmp_path / "entities.parquet"), "--out", str(tmp_path / "o.parquet")]
    assert main(argv) == 1
    assert "lacks column(s) merchant_id" in capsys.readouterr().err
