"""A model version's reference, ready for testing: which test each column gets, and the reference rows,
sorted columns, category counts and bins that live windows are compared with.

Built only from the version's `drift_reference.parquet` (training rows and the model's probability on
them) and its drift state, never from live traffic.

Hour matching. The model sees the hour of day (hour_sin, hour_cos), so its scores, and through them
prediction drift, follow the clock: a window of one busy hour is not drawn from the same distribution as
a reference spread over days, even when nothing has changed. When the input has clock columns, each window
is compared with a subsample of reference rows that has exactly the window's mix of hours (stratified,
without replacement). That keeps every test exact under "nothing changed but the time of day", at the
price of a smaller reference for windows concentrated in a few hours. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from flywheel_core.model_repo import Column, ModelMetadata

from . import _stats
from ._errors import ReferenceUnavailable
from ._features import CLOCK, MAX_CHI2_BUCKETS

PROBABILITY = "probability"
HIST_BINS = 20
BAND_ROWS = 400
"""Reference rows per hour band of the online detector: consecutive hours are merged until a band has
this many, so quiet night hours share one band and every band's quantiles are estimated well."""

Kind = Literal["numeric", "categorical", "skipped"]


@dataclass(frozen=True)
class FeatureSpec:
    """How one column is tested. `index` is its position in the model input (-1: the probability)."""

    name: str
    index: int
    kind: Kind
    reason: str


@dataclass
class ReferenceView:
    """The reference, or a row subset of it, in the form the tests read."""

    rows: int
    sorted_values: dict[str, np.ndarray]
    category_counts: dict[str, np.ndarray]
    psi_ref: dict[str, np.ndarray]
    index: np.ndarray | None = None
    """Rows of `Reference.table` in this view (None: all)."""


@dataclass
class Reference:
    """Everything a window or the online detector is compared with, for one model version."""

    model: str
    version: str
    columns: list[str]
    features: list[FeatureSpec]
    table: np.ndarray
    table_columns: list[str]
    baseline: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    hours: np.ndarray | None = None
    bands: np.ndarray | None = None
    """Hour of day -> online hour band (None: no clock columns, one band)."""
    category_values: dict[str, np.ndarray] = field(default_factory=dict)
    psi_edges: dict[str, np.ndarray] = field(default_factory=dict)
    hist_edges: dict[str, np.ndarray] = field(default_factory=dict)
    hist_ref: dict[str, np.ndarray] = field(default_factory=dict)
    full: ReferenceView = field(default_factory=lambda: ReferenceView(0, {}, {}, {}))

    @property
    def rows(self) -> int:
        return len(self.table)

    @property
    def tested(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind != "skipped"]

    @property
    def sorted_values(self) -> dict[str, np.ndarray]:
        return self.full.sorted_values

    @property
    def has_probability(self) -> bool:
        return PROBABILITY in self.table_columns

    @property
    def joint_columns(self) -> list[str]:
        """Numeric tested columns (probability included): what the multivariate test sees."""
        return [f.name for f in self.features if f.kind == "numeric"]

    def band_sorted(self, names: list[str]) -> list[list[np.ndarray]]:
        """Sorted reference columns per hour band (for the online detector)."""
        if self.bands is None or self.hours is None:
            return [[self.full.sorted_values[n] for n in names]]
        out = []
        for band in range(int(self.bands.max()) + 1):
            rows = np.flatnonzero(self.bands[self.hours] == band)
            out.append([np.sort(self.column(n, rows)[np.isfinite(self.column(n, rows))]) for n in names])
        return out

    def row_bands(self, x: np.ndarray) -> np.ndarray | None:
        """The hour band of each model-input row (None without clock columns)."""
        if self.bands is None:
            return None
        return self.bands[hours_of(x[:, self.columns.index(CLOCK[0])], x[:, self.columns.index(CLOCK[1])])]

    def column(self, name: str, index: np.ndarray | None = None) -> np.ndarray:
        values = self.table[:, self.table_columns.index(name)]
        return values if index is None else values[index]

    def view(self, index: np.ndarray | None) -> ReferenceView:
        """The reference restricted to rows `index` (None: the precomputed full view)."""
        if index is None:
            return self.full
        out = ReferenceView(len(index), {}, {}, {}, index)
        for spec in self.tested:
            values = self.column(spec.name, index)
            values = values[np.isfinite(values)]
            if spec.kind == "categorical":
                counts = _stats.category_counts(values, self.category_values[spec.name])
                out.category_counts[spec.name] = counts
                out.psi_ref[spec.name] = counts / max(len(values), 1)
            else:
                out.sorted_values[spec.name] = np.sort(values)
                if spec.kind == "numeric":
                    out.psi_ref[spec.name] = _stats.binned_proportions(values, self.psi_edges[spec.name])
        return out

    def matched(self, x: np.ndarray, seed: int) -> tuple[ReferenceView, np.ndarray]:
        """A reference view with the hour mix of window rows `x`, and which window rows it covers."""
        if self.hours is None:
            return self.full, np.ones(len(x), dtype=bool)
        window_hours = hours_of(x[:, self.columns.index(CLOCK[0])], x[:, self.columns.index(CLOCK[1])])
        wanted = np.bincount(window_hours, minlength=24)
        available = np.bincount(self.hours, minlength=24)
        keep = available[window_hours] > 0  # window rows at an hour the reference never saw are left out
        wanted[available == 0] = 0
        n = int(wanted.sum())
        if n == 0:
            return self.full, keep
        present = wanted > 0
        size = min(self.rows, int(np.min(available[present] * n / wanted[present])))
        rng = np.random.default_rng(seed)
        picks = []
        for hour in np.flatnonzero(present):
            take = min(int(available[hour]), int(math.floor(wanted[hour] * size / n + 0.5)))
            picks.append(rng.choice(np.flatnonzero(self.hours == hour), take, replace=False))
        return self.view(np.sort(np.concatenate(picks))), keep


def hours_of(hour_sin: np.ndarray, hour_cos: np.ndarray) -> np.ndarray:
    """Hour of day (0-23) from the on-demand features' angle."""
    angle = np.arctan2(np.asarray(hour_sin, np.float64), np.asarray(hour_cos, np.float64))
    return (np.rint(angle * 24.0 / (2.0 * np.pi)).astype(np.int64)) % 24


def hour_bands(hours: np.ndarray, min_rows: int = BAND_ROWS) -> np.ndarray:
    """Merge consecutive hours into bands of at least `min_rows` reference rows; hour -> band."""
    counts = np.bincount(hours, minlength=24)
    out = np.zeros(24, dtype=np.int64)
    band, filled = 0, 0
    for hour in range(24):
        out[hour] = band
        filled += int(counts[hour])
        if filled >= min_rows and hour < 23:
            band, filled = band + 1, 0
    if filled < min_rows and band > 0:  # a short last band joins the one before it
        out[out == band] = band - 1
    return out


def column_specs(columns: Sequence[Column], skip: tuple[str, ...], has_probability: bool) -> list[FeatureSpec]:
    """The test of each input column (metadata `input.columns`), plus the probability if present."""
    specs = []
    for index, column in enumerate(columns):
        name = column.name
        if name in skip:
            specs.append(FeatureSpec(name, index, "skipped", "listed in FLYWHEEL_DRIFT_SKIP_FEATURES"))
        elif column.kind == "numeric":
            specs.append(FeatureSpec(name, index, "numeric", "cvm+mannwhitney"))
        elif (column.buckets or 0) > MAX_CHI2_BUCKETS:
            specs.append(FeatureSpec(name, index, "skipped",
                                     f"id column with {column.buckets} buckets: chi-square has no power"))
        else:
            specs.append(FeatureSpec(name, index, "categorical", "chi2"))
    if has_probability:
        specs.append(FeatureSpec(PROBABILITY, -1, "numeric", "cvm+mannwhitney (prediction drift)"))
    return specs


def build_reference(model: str, version: str, metadata: ModelMetadata, frame_columns: dict[str, np.ndarray],
                    skip: tuple[str, ...], state: dict[str, Any] | None = None, match_hours: bool = True) -> Reference:
    """Assemble a Reference from the parquet's columns (name -> array) and the version's typed metadata
    (`model_repo.ModelVersion.spec`)."""
    columns = metadata.input.columns
    if not columns:
        raise ReferenceUnavailable(f"{model}/{version}: metadata.json has no input.columns")
    names = [c.name for c in columns]
    missing = [n for n in names if n not in frame_columns]
    if missing:
        raise ReferenceUnavailable(f"{model}/{version}: drift_reference.parquet lacks columns {missing}; "
                                   "republish the version with the trainer's write_drift_reference")
    table_columns = names + ([PROBABILITY] if PROBABILITY in frame_columns else [])
    table = np.column_stack([np.asarray(frame_columns[n], dtype=np.float64) for n in table_columns])
    if len(table) < 20:
        raise ReferenceUnavailable(f"{model}/{version}: drift_reference.parquet has {len(table)} rows; 20 needed")
    specs = column_specs(columns, skip, PROBABILITY in frame_columns)
    ref = Reference(model=model, version=version, columns=names, features=specs, table=table,
                    table_columns=table_columns, baseline=_baseline(metadata.metrics), state=dict(state or {}))
    if match_hours and all(c in names for c in CLOCK):
        ref.hours = hours_of(ref.column(CLOCK[0]), ref.column(CLOCK[1]))
        ref.bands = hour_bands(ref.hours)
    full = ReferenceView(ref.rows, {}, {}, {})
    for spec in specs:
        values = ref.column(spec.name)
        values = values[np.isfinite(values)]
        if spec.kind == "categorical":
            ref.category_values[spec.name] = np.unique(values)
            full.category_counts[spec.name] = _stats.category_counts(values, ref.category_values[spec.name])
            full.psi_ref[spec.name] = full.category_counts[spec.name] / max(len(values), 1)
            continue
        ordered = np.sort(values)
        full.sorted_values[spec.name] = ordered  # skipped numeric columns too: the online detector may use them
        if spec.kind == "numeric":
            ref.psi_edges[spec.name] = _stats.quantile_edges(ordered, 10)
            full.psi_ref[spec.name] = _stats.binned_proportions(ordered, ref.psi_edges[spec.name])
            ref.hist_edges[spec.name] = histogram_edges(ordered)
            ref.hist_ref[spec.name] = _stats.binned_proportions(ordered, ref.hist_edges[spec.name])
    ref.full = full
    return ref


def histogram_edges(ordered: np.ndarray) -> np.ndarray:
    """Interior edges for a plot: equal width over the reference's 0.5-99.5 % range, tails in end bins."""
    if len(ordered) == 0:
        return np.zeros(0)
    lo, hi = np.quantile(ordered, [0.005, 0.995])
    if hi <= lo:
        return np.unique(ordered)[:HIST_BINS]
    return np.linspace(lo, hi, HIST_BINS - 1)


def _baseline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The version's test metrics (what live performance is compared with); empty when unknown.

    `metrics` stays an untyped dict in the contract (informational, the model card's), so these keys are the
    trainer's convention, not the contract's: `torch.test` (or `test`) and `ece_bins`, each read with `.get`
    so that a missing one only leaves the baseline without it."""
    test = (metrics.get("torch") or {}).get("test") or metrics.get("test") or {}
    out = {key: test.get(key) for key in ("roc_auc", "pr_auc", "ece") if test.get(key) is not None}
    if metrics.get("ece_bins"):
        out["ece_bins"] = int(metrics["ece_bins"])
    return out


def feature_matrix(reference: Reference, x: np.ndarray, probabilities: np.ndarray | None,
                   names: list[str]) -> np.ndarray:
    """Columns `names` of the model input `x` (and the probability), as float64 [n, len(names)]."""
    out = np.empty((len(x), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        if name == PROBABILITY:
            out[:, j] = np.nan if probabilities is None else probabilities
        else:
            out[:, j] = x[:, reference.columns.index(name)]
    return out
