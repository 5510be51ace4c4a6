"""Training-serving parity: what the transformer sent the model equals what training would have built.

For sampled live transactions, the model input the transformer served (online features, on-demand
features, hashing, defaults) must equal the model input built from Feast's point-in-time
`get_historical_features` at the same instant, the way the trainer builds it.
"""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd

from conftest import run
from flywheel_core import model_repo as repo
from flywheel_core import schema
from localstack import bearer, token, venv_python



def test_served_model_input_equals_point_in_time_training_input(stack, ports, live_transactions, model_repo, data_env, workdir):
    sample = live_transactions[:20]
    response = httpx.post(
        f"http://127.0.0.1:{ports.transformer}/v1/models/fraud:predict",
        json={"instances": [{k: t[k] for k in schema.RAW_TRANSACTION_FIELDS} for t in sample]},
        headers={"x-flywheel-debug-features": "1", **bearer(token(data_env["FLYWHEEL_DATA_DIR"], "transformer-debug"))},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    served = pd.DataFrame([p["features"] for p in response.json()["predictions"]])

    timestamps = pd.to_datetime(pd.Series([t["event_timestamp"] for t in sample]), utc=True)
    entities = pd.DataFrame({
        "card_id": [t["card_id"] for t in sample],
        "merchant_id": [t["merchant_id"] for t in sample],
        "event_timestamp": schema.as_of(timestamps),
        "amount": [float(t["amount"]) for t in sample],
        "event_hour": timestamps.dt.hour.astype("int64"),
        "transaction_id": [t["transaction_id"] for t in sample],
    })
    entities_path, out_path = workdir / "parity_entities.parquet", workdir / "parity_features.parquet"
    entities.to_parquet(entities_path)
    run([venv_python("services/features"), "-m", "flywheel_features", "historical", "--entities", str(entities_path),
         "--out", str(out_path)], data_env)
    historical = pd.read_parquet(out_path).set_index("transaction_id").loc[[t["transaction_id"] for t in sample]]
    raw = pd.DataFrame(sample).set_index("transaction_id")
    for column in schema.HASHED_COLUMNS:
        historical[column] = raw[column]

    # Missing features take the training defaults of the version that answered (other tests publish versions
    # trained on other splits, whose medians differ).
    (served_version,) = {p["model_version"] for p in response.json()["predictions"]}
    defaults = repo.load_version(repo.resolve(model_repo, "fraud", served_version)).metadata["defaults"]
    expected = schema.vectorize_frame(historical.reset_index(drop=True), defaults)
    actual = served[[c["name"] for c in schema.COLUMNS]].to_numpy(dtype=np.float32)
    mismatches = np.argwhere(~np.isclose(actual, expected, rtol=1e-6, atol=1e-6))
    assert len(mismatches) == 0, [
        (sample[i]["transaction_id"], schema.COLUMNS[j]["name"], float(actual[i, j]), float(expected[i, j]))
        for i, j in mismatches[:10]
    ]
