"""The multivariate test: alibi-detect's MMDDrift (torch backend), run on a schedule in its own thread.

This is the only module that imports alibi-detect (and with it numpy<2 and torch). The import takes
tens of seconds, so it happens in the background on the first job: the service is ready long before.
Columns enter MMD as normal scores against the reference (mid-ranks), so a heavy-tailed amount does not
dominate the Gaussian kernel's distances and every column weighs the same; the kernel bandwidth is
alibi-detect's median heuristic on the reference. Each run compares the window with its hour-matched
reference rows (`Reference.matched`). One job per version waits at most: a newer window replaces an
older one that has not started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import ndtri

from ._reference import Reference, ReferenceView, feature_matrix

log = logging.getLogger("flywheel_drift.mmd")

Key = tuple[str, str]
MIN_ROWS = 2
"""MMD's unbiased estimate divides by n (n - 1): with fewer rows on a side it is undefined (alibi-detect raised
ZeroDivisionError), so such a run answers "no test" (p_value, distance, threshold None; drift false)."""


def rank_scores(reference: Reference, names: list[str], rows: np.ndarray) -> np.ndarray:
    """Mid-rank normal scores of rows [n, len(names)] against the reference columns."""
    out = np.empty(rows.shape, dtype=np.float32)
    for j, name in enumerate(names):
        ref = reference.sorted_values[name]
        lo = np.searchsorted(ref, rows[:, j], side="left")
        hi = np.searchsorted(ref, rows[:, j], side="right")
        out[:, j] = ndtri((lo + hi + 1) / 2.0 / (len(ref) + 1))
    return out


class MMDRunner:
    def __init__(self, rows: int, permutations: int, alpha: float,
                 on_result: Callable[[Key, dict[str, Any]], None]) -> None:
        self.rows = rows
        self.permutations = permutations
        self.alpha = alpha
        self.on_result = on_result
        self.status = "idle (alibi-detect is imported on the first job)"
        self._jobs: dict[Key, tuple[Reference, ReferenceView, np.ndarray, np.ndarray, float]] = {}
        self._mmd: Any = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="drift-mmd", daemon=True)
        self._thread.start()

    def submit(self, reference: Reference, view: ReferenceView, x: np.ndarray, probabilities: np.ndarray,
               at: float) -> None:
        """Queue an MMD test of window rows `x` against the reference rows of `view` (the window's
        hour-matched reference); replaces a job of the same version that has not started."""
        with self._cond:
            self._jobs[(reference.model, reference.version)] = (reference, view, x, probabilities, at)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                key, job = next(iter(self._jobs.items()))
                del self._jobs[key]
            try:
                result = self._test(*job)
            except Exception as e:  # a failed MMD run must not stop the thread; the report shows why
                log.warning("MMD test for %s/%s failed: %s", key[0], key[1], e)
                self.status = f"failed: {type(e).__name__}: {e}"
                continue
            self.on_result(key, result)

    def _detector_class(self) -> Any:
        if self._mmd is None:
            self.status = "importing alibi-detect"
            from alibi_detect.cd import MMDDrift  # slow: torch and alibi-detect load here, off the request path

            self._mmd = MMDDrift
            self.status = "ready"
        return self._mmd

    def _test(self, reference: Reference, view: ReferenceView, x: np.ndarray, probabilities: np.ndarray,
              at: float) -> dict[str, Any]:
        names = reference.joint_columns
        if not names:
            raise RuntimeError("the reference has no numeric columns for MMD")
        rng = np.random.default_rng(int(at) & 0xFFFFFFFF)
        index = view.index if view.index is not None else np.arange(reference.rows)
        ref_rows = np.column_stack([reference.column(n, index) for n in names])
        ref_rows = ref_rows[np.isfinite(ref_rows).all(axis=1)]
        rows = feature_matrix(reference, x, probabilities, names)
        rows = rows[np.isfinite(rows).all(axis=1)]
        if len(ref_rows) > self.rows:
            ref_rows = ref_rows[rng.choice(len(ref_rows), self.rows, replace=False)]
        if len(rows) > self.rows:
            rows = rows[rng.choice(len(rows), self.rows, replace=False)]
        if len(rows) < MIN_ROWS or len(ref_rows) < MIN_ROWS:
            return {"at": at, "rows": int(len(rows)), "reference_rows": int(len(ref_rows)), "columns": names,
                    "p_value": None, "distance": None, "threshold": None, "drift": False, "seconds": 0.0}
        started = time.perf_counter()
        # A detector per run: its reference is this window's hour-matched sample. Construction is cheap
        # (the kernel bandwidth is the median heuristic on x_ref); the permutations are the cost.
        detector = self._detector_class()(rank_scores(reference, names, ref_rows), backend="pytorch",
                                          p_val=self.alpha, n_permutations=self.permutations, device="cpu")
        data = detector.predict(rank_scores(reference, names, rows))["data"]
        return {"at": at, "rows": int(len(rows)), "reference_rows": int(len(ref_rows)), "columns": names,
                "p_value": float(data["p_val"]), "distance": float(data["distance"]),
                "threshold": float(data["threshold"]), "drift": bool(data["is_drift"]),
                "seconds": time.perf_counter() - started}
