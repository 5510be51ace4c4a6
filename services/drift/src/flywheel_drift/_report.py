"""The report: what the service knows about each monitored version, as JSON (GET /v1/report) and as the
data behind the HTML page (GET /report). The analysis thread builds the per-version part between items
(`version_reports`, so it is consistent) and publishes it; a reader combines the latest published part with
the service's live status (`service_report`) and never waits for the analysis. Typed and versioned by
`_results.Report`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._monitor import VersionMonitor
from ._results import SCHEMA_VERSION, Report, Verdict


def _clean(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if np.isfinite(f) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def version_report(monitor: VersionMonitor, totals: tuple[int, int]) -> dict[str, Any]:
    ref, s = monitor.reference, monitor.state
    last = s.last_window or {}
    features = []
    for spec in ref.features:
        entry: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "test": spec.reason}
        result = (last.get("features") or {}).get(spec.name)
        if result is not None:
            entry["last"] = {k: result[k] for k in ("p_value", "q_value", "distance", "psi", "drift", "mean")}
            entry["current_histogram"] = result.get("histogram")
        if spec.name in ref.hist_edges:
            entry["reference_histogram"] = {"edges": ref.hist_edges[spec.name], "proportions": ref.hist_ref[spec.name]}
            entry["reference_mean"] = float(np.mean(ref.sorted_values[spec.name]))
        if spec.name in ref.category_values:
            entry["categories"] = ref.category_values[spec.name]
        features.append(entry)
    online = dict(ref.state.get("online", {}))
    if s.online is not None:
        online.update(statistics=s.online.statistics(), run_length=s.online.run_length)
    online["alarms"] = list(s.online_alarms)
    drift = bool(last.get("drift")) or any(e["active"] for e in s.episodes.values())
    verdict = Verdict.DRIFTED if drift else Verdict.STABLE if s.windows else Verdict.INCONCLUSIVE
    return _clean({
        "model": ref.model,
        "version": ref.version,
        "verdict": verdict.value,
        "drift": drift,
        "rows": s.rows,
        "windows": s.windows,
        "open_window_rows": s.buffer.rows,
        "episodes": s.episodes,
        "last_window": {k: v for k, v in last.items() if k != "features"} if last else None,
        "reference": {"rows": ref.rows, "baseline": ref.baseline},
        "features": features,
        "history": list(s.history),
        "online": online,
        "mmd": list(s.mmd)[-50:],
        "performance": s.performance,
        "performance_history": list(s.performance_history),
        "predictions_logged": totals[0],
        "predictions_labelled": totals[1],
        "alerts": [alert.to_json() for alert in s.alerts],
        "unseen_rows": s.unseen_rows,
        "unseen": {name: {"count": n, "share": n / s.unseen_rows if s.unseen_rows else None}
                   for name, n in sorted(s.unseen.items())},
    })


def version_reports(monitors: dict[tuple[str, str], VersionMonitor],
                    totals: Callable[[str, str], tuple[int, int]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every monitored version's report (JSON-ready), by (model, version); the analysis thread calls this."""
    return {key: version_report(monitor, totals(*key)) for key, monitor in sorted(monitors.items())}


def service_report(versions: dict[tuple[str, str], dict[str, Any]], status: dict[str, Any], model: str | None,
                   version: str | None) -> dict[str, Any]:
    """The whole report: service `status` plus every published version report matching the filters, built
    through the `Report` model (so it is what the README documents) and returned in its JSON form."""
    chosen = [r for (m, v), r in versions.items()
              if (model is None or m == model) and (version is None or v == version)]
    report = Report.model_validate(_clean({"schema_version": SCHEMA_VERSION, **status, "versions": chosen}))
    return report.model_dump(mode="json", exclude_unset=True)
