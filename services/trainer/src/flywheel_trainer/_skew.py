"""Training-serving skew at run time: the served model inputs, against what training would have joined.

`python -m flywheel_trainer skew` reads a sample of one version's served rows from the drift service
(`_drift`, flywheel_contracts.skew), finds each row's transaction by id in the offline data the trainer reads,
rebuilds its model input exactly as training does (the same point-in-time join, `_dataset.point_in_time_features`,
on-demand features included, then `schema.vectorize_frame` with the version's own `defaults`), compares the two
column by column (`flywheel_contracts.skew.matches`) and posts the counts back, where the drift report and its
metrics show them per version.

Where a served transaction is found, newest source last:

- the history (`transactions.parquet`) and the label feed's live parts (`transactions.live-*.parquet`), every raw
  field: `_dataset.read_transactions`, as training reads them;
- the features service's stream log (`<data>/stream/transactions.jsonl`): every transaction the transformer
  scored with the stream step on, before its label is due. The log keeps only what the card and merchant
  features need (card, merchant, amount, country, time), so for these rows the hashed `currency`,
  `merchant_category` and `channel` columns cannot be rebuilt and are not compared (their `compared` counts
  say so); every numeric feature is.

A row found nowhere (its transaction is not in the offline data yet, or its id is `<inference id>/<row>`) is
`unmatched`. A mismatch is a finding, not a failure: the run succeeds once the result is posted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flywheel_contracts.skew import (
    DEFAULT_TOLERANCE,
    MAX_EXAMPLES,
    Example,
    FeatureSkew,
    SkewResult,
    SkewSample,
    matches,
)
from flywheel_core import model_repo, schema
from flywheel_core.feature_pipeline import from_us
from flywheel_core.label_feed import STREAM_LOG

from ._config import TrainerSettings
from ._dataset import point_in_time_features, read_transactions
from ._drift import DriftClient
from ._errors import ConfigError, DataError

log = logging.getLogger("flywheel_trainer")

RAW_COLUMNS = schema.RAW_TRANSACTION_FIELDS
NOT_LOGGED = ("currency", "merchant_category", "channel")
"""Raw fields the stream log does not keep: their hashed columns cannot be rebuilt for a row found only there."""


def read_stream_log(data_dir: Path, ids: Iterable[str]) -> pd.DataFrame:
    """The stream log's transactions among `ids` (RAW_COLUMNS, NOT_LOGGED empty); a line being written is left
    for the next run, and a transaction logged twice (a retry) counts once."""
    wanted, rows = set(ids), dict[str, dict[str, Any]]()
    path = Path(data_dir) / STREAM_LOG
    if wanted and path.is_file():
        with path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                entry = json.loads(raw)
                if str(entry["transaction_id"]) in wanted:
                    rows.setdefault(str(entry["transaction_id"]), entry)
    frame = pd.DataFrame(
        {
            "transaction_id": list(rows),
            "card_id": [str(e["card_id"]) for e in rows.values()],
            "merchant_id": [e.get("merchant_id") for e in rows.values()],
            "amount": np.array([e["amount"] for e in rows.values()], dtype="float64"),
            "country": [e["country"] for e in rows.values()],
            "event_timestamp": from_us([int(e["event_us"]) for e in rows.values()]),
        }
    )
    for column in NOT_LOGGED:
        frame[column] = None
    return frame[list(RAW_COLUMNS)]


def find_transactions(data_dir: Path, ids: Iterable[str]) -> tuple[pd.DataFrame, set[str]]:
    """The served transactions the offline data holds, one row per id (RAW_COLUMNS), and the ids of those found
    only in the stream log (their NOT_LOGGED fields are unknown)."""
    wanted = set(ids)
    history = read_transactions(data_dir)
    found = history.loc[history["transaction_id"].astype(str).isin(wanted), list(RAW_COLUMNS)]
    found = found.assign(transaction_id=found["transaction_id"].astype(str))
    logged = read_stream_log(data_dir, wanted - set(found["transaction_id"]))
    parts = [frame for frame in (found, logged) if len(frame)]
    if not parts:
        return found.iloc[0:0].reset_index(drop=True), set()
    return pd.concat(parts, ignore_index=True), set(logged["transaction_id"])


def offline_inputs(settings: TrainerSettings, transactions: pd.DataFrame, partial: set[str],
                   version: model_repo.ModelVersion) -> pd.DataFrame:
    """Each transaction's model input as training builds it, indexed by transaction id, one column per input
    column of `version`; NaN where it cannot be rebuilt (a hashed NOT_LOGGED column of a `partial` row)."""
    columns = [c.name for c in version.spec.input.columns]
    known = [c["name"] for c in schema.COLUMNS]
    if unknown := [c for c in columns if c not in known]:
        raise DataError(f"{version.path} has input columns {unknown} that this trainer's schema does not build; "
                        "check it with the trainer that published it")
    if transactions.empty:
        return pd.DataFrame(columns=columns, dtype="float64")
    frame = point_in_time_features(settings.feature_repo, settings.data_dir, transactions,
                                   yaml=settings.feature_store_yaml)
    vectors = pd.DataFrame(schema.vectorize_frame(frame, version.spec.defaults).astype("float64"),
                           columns=known, index=frame["transaction_id"].to_numpy())
    vectors.loc[vectors.index.isin(partial), [c for c in NOT_LOGGED if c in vectors.columns]] = np.nan
    return vectors[columns]


def compare(sample: SkewSample, offline: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE,
            checked_at: float | None = None) -> SkewResult:
    """The served rows against `offline` (`offline_inputs`), column by column over the version's columns (those of
    `offline`). A served row whose id `offline` lacks is unmatched; a NaN offline value is not compared. Pure."""
    compared, mismatched = dict.fromkeys(offline.columns, 0), dict.fromkeys(offline.columns, 0)
    examples: dict[str, list[Example]] = {name: [] for name in offline.columns}
    rows = unmatched = 0
    table = {str(i): row for i, row in zip(offline.index, offline.to_numpy(), strict=True)}
    for served in sample.rows:
        values = table.get(served.id)
        if values is None:
            unmatched += 1
            continue
        rows += 1
        for name, value in zip(offline.columns, values, strict=True):
            if np.isnan(value):
                continue
            compared[name] += 1
            got = served.inputs.get(name)
            if not matches(got, float(value), tolerance):
                mismatched[name] += 1
                if len(examples[name]) < MAX_EXAMPLES:
                    examples[name].append(Example(id=served.id, served=got, offline=float(value)))
    return SkewResult(
        model=sample.model, version=sample.version, checked_at=time.time() if checked_at is None else checked_at,
        rows=rows, unmatched=unmatched, tolerance=tolerance,
        features={name: FeatureSkew(compared=compared[name], mismatched=mismatched[name], examples=examples[name])
                  for name in offline.columns},
    )


def summary(result: SkewResult, seen: int | None = None) -> str:
    """One paragraph for a person: rows compared, unmatched, and each mismatched feature with its count."""
    sampled = result.rows + result.unmatched
    text = f"{result.model} {result.version}: compared {result.rows} of {sampled} sampled served rows"
    if seen is not None:
        text += f" (drawn from {seen} served)"
    text += f"; {result.unmatched} unmatched (not in the offline data yet, or no transaction id)"
    mismatched = result.mismatched_features
    if not mismatched:
        return text + f"; no feature mismatched (tolerance {result.tolerance:g})."
    counts = ", ".join(f"{n} {result.features[n].mismatched}/{result.features[n].compared}" for n in mismatched)
    return text + f"; {len(mismatched)} features mismatched (tolerance {result.tolerance:g}): {counts}."


def check(settings: TrainerSettings, client: DriftClient, version: str) -> tuple[SkewResult, SkewSample]:
    """One version: sample, find, rebuild, compare, post."""
    try:
        path = model_repo.resolve(settings.model_repo, settings.model, version)
        loaded = model_repo.load_version(path, verify=False)
    except model_repo.ModelRepoError as e:
        raise DataError(
            f"{settings.model} {version} is served but cannot be read from {settings.model_repo}: {e}"
        ) from e
    sample = client.sample(settings.model, version, settings.skew_limit)
    transactions, partial = find_transactions(settings.data_dir, {row.id for row in sample.rows})
    log.info("%s %s: %d served rows sampled of %d; %d found in the offline data (%d only in the stream log)",
             settings.model, version, len(sample.rows), sample.seen, len(transactions), len(partial))
    result = compare(sample, offline_inputs(settings, transactions, partial, loaded))
    client.post(result)
    return result, sample


def skew(settings: TrainerSettings) -> Iterator[str]:
    """Check `settings.skew_version`, or every version of the model the drift service reports on, posting each
    result; yields one summary paragraph per version once it is posted. ConfigError (exit 2) for a missing URL or
    token, DriftError (exit 1) when the drift service cannot be reached or refuses."""
    if not settings.drift_url:
        raise ConfigError("Config 'FLYWHEEL_TRAINER_DRIFT_URL' has value '': expected the drift service's URL "
                          "(--drift-url)")
    token = settings.skew_token_file
    if token is None or not token.is_file() or not token.read_text().strip():
        raise ConfigError(f"Config 'FLYWHEEL_TRAINER_SKEW_TOKEN_FILE' has value '{token or ''}': expected a file "
                          "holding the drift service's skew token (--token-file)")
    if settings.drift_ca_file is not None and not settings.drift_ca_file.is_file():
        raise ConfigError(f"Config 'FLYWHEEL_TRAINER_DRIFT_CA_FILE' has value '{settings.drift_ca_file}': expected "
                          "a CA bundle file (--ca-file)")
    client = DriftClient(settings.drift_url, token, settings.drift_ca_file)
    versions = [settings.skew_version] if settings.skew_version else client.versions(settings.model)
    if not versions:
        yield (f"{settings.model}: the drift service at {settings.drift_url} reports no version of it; nothing to "
               "check.")
    for version in versions:
        result, sample = check(settings, client, version)
        yield summary(result, sample.seen) + f" Posted to {settings.drift_url.rstrip('/')}/v1/skew."
