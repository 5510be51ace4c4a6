"""Benchmark of the drift service against plain alibi-detect detectors on the same data.

    services/drift/.venv/bin/python bench/drift/run.py [--trials 1000] [--online-runs 2000]
        [--alibi-online-runs 300] [--workers 2] [--skip-service]

Writes bench/results/drift.json; docs/benchmarks.md (section "Drift detection") explains the figures. The latency
the service adds to the inference path is measured on the real stack by bench/drift/inference_path.py. Statistical
parts run in `--workers` processes (the figures do not depend on it); the service parts start
`python -m flywheel_drift` on loopback. On the shared 2-core box a full run takes about 30 minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import detectors  # noqa: E402
import service  # noqa: E402

RESULTS = HERE.parent / "results" / "drift.json"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1000, help="windows per false-alarm / power setting")
    p.add_argument("--online-runs", type=int, default=2000, help="runs of the service's online detector")
    p.add_argument("--alibi-online-runs", type=int, default=300, help="runs of alibi-detect's CVMDriftOnline")
    p.add_argument("--alibi-bootstraps", type=int, default=5000, help="CVMDriftOnline n_bootstraps (>= 10 x ERT)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-service", action="store_true", help="only the statistical part")
    p.add_argument("--only", choices=["windows", "online", "service"], default=None,
                   help="run one part and merge it into the existing results file")
    args = p.parse_args()
    out: dict = json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    out.update({"started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "note": "2 cores shared with other engineers' jobs; times are indicative"},
                "alpha": detectors.ALPHA})
    if args.only in (None, "windows"):
        windows(args, out)
    if args.only in (None, "online"):
        online(args, out)
    if args.only in (None, "service") and not args.skip_service:
        service_part(out)
    out["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    log(f"wrote {RESULTS}")
    return 0


def windows(args: argparse.Namespace, out: dict) -> None:
    log("false alarms, no drift, 20 features, reference 5000 / 2000, window 500")
    out["false_alarm"] = [detectors.window_rates(m, 500, 20, 0.0, args.trials, args.workers) for m in (5000, 2000)]
    log(json.dumps([r["rate"] for r in out["false_alarm"]]))
    log("power, 0.2 sigma in 1 of 20 features, window 500")
    out["power"] = [detectors.window_rates(m, 500, 20, 0.2, args.trials, args.workers) for m in (5000, 2000)]
    log(json.dumps([r["rate"] for r in out["power"]]))
    log("false alarms on count features (ties)")
    out["false_alarm_discrete"] = detectors.discrete_false_alarms(max(args.trials // 5, 100), args.workers)
    log(json.dumps(out["false_alarm_discrete"]["rate"]))


def online(args: argparse.Namespace, out: dict) -> None:
    ert, change_at = 500.0, 100
    result: dict = {"ert": ert, "shift_sigma": 1.0, "change_at_row": change_at, "service": {}, "alibi": {}}
    for d in (1, 10):
        thresholds = detectors.online_thresholds(ert, d)
        entry = {"thresholds": thresholds}
        for label, h in (("siegmund", thresholds["siegmund_h"]), ("simulated", thresholds["simulated_h"])):
            entry[label] = {
                "run_length_no_drift": detectors.rank_cusum_runs(ert, d, h, args.online_runs, 0.0, 0, 7),
                "delay_after_shift": detectors.rank_cusum_runs(ert, d, h, args.online_runs, 1.0, change_at, 8)}
        result["service"][f"features_{d}"] = entry
        summary = {k: (v["run_length_no_drift"]["mean"], v["delay_after_shift"]["mean"])
                   for k, v in entry.items() if k != "thresholds"}
        log(f"service online d={d}: {json.dumps(summary)}")
    for windows in ([10, 20], [20, 40]):
        key = "windows_" + "_".join(map(str, windows))
        result["alibi"][key] = {
            "run_length_no_drift": detectors.alibi_online(ert, windows, args.alibi_bootstraps, args.alibi_online_runs,
                                                          0.0, 0, args.workers),
            "delay_after_shift": detectors.alibi_online(ert, windows, args.alibi_bootstraps, args.alibi_online_runs,
                                                        1.0, change_at, args.workers)}
        log(f"alibi CVMDriftOnline {windows}: " + json.dumps(
            {k: v["mean"] for k, v in result["alibi"][key].items()}))
    out["online"] = result


def service_part(out: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as scratch:
        log("time to ready")
        out["time_to_ready_s"] = service.time_to_ready(Path(scratch) / "ready")
        log(json.dumps(out["time_to_ready_s"]))
        log("ingest, 1000-row batches")
        out["ingest_batch"] = service.ingest(Path(scratch) / "ingest")
        log(json.dumps(out["ingest_batch"]))
        log("ingest, single-row CloudEvent pairs")
        out["ingest_cloudevents"] = [service.cloudevents(Path(scratch) / "ce", durable=d) for d in (True, False)]
        log(json.dumps(out["ingest_cloudevents"]))


if __name__ == "__main__":
    sys.exit(main())
