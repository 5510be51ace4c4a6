"""Stateful vs stateless retraining on the simulator's concept-drift scenario: PR-AUC recovered, compute spent.

The book's claim (stateful retraining needs far less compute and data) measured with the real trainer, no stack:

1. the default-size history (fixed start, so the data does not move with the day) -> feast apply -> v1, a cold
   start on the whole history;
2. `python -m flywheel_core.sim live --scenario concept` (a new fraud pattern) continues the world for four weeks;
   at L+21d (L: the end of the history) its card and merchant rows and its due labels reach the offline data as the
   stream step and the label feed would put them there (stateful_steps.py deliver). Labels of the last 7 days are
   still arriving, so the newest trainable rows are those of L+14d;
3. retrain at cut-off L+21d, each run in its own trainer process:
   (a) stateless: cold start on a sliding window as long as the history (1440h: its last 39 days + the new data);
   (b) stateful: WARM_START=v1 on only the new data (WINDOW 504h: events after L), EPOCHS=5;
   (c) control: cold start on only that new data, default epochs: is it the warm start or the data?
4. every version is scored on the same held-out window none of them trained on: live events in (L+14d, L+21d],
   labelled by L+28d (stateful_steps.py evaluate).

Compute: wall and CPU seconds of each trainer process (getrusage of children: Feast join, fit, export, publish)
and of the torch fit alone (metadata lineage.training.compute). Rows seen: the training split's rows times the
epochs run. THREADS=1 (the machine has 2 shared cores), latency timing cut to a few runs (it is not measured here).

    python3 bench/trainer/stateful.py [--workdir DIR] [--out bench/results/stateful.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from benchkit import cpu_model, log  # noqa: E402

TRAINER = ROOT / "services" / "trainer"
PYTHON = TRAINER / ".venv" / "bin" / "python"
STEPS = Path(__file__).resolve().parent / "stateful_steps.py"
HISTORY_START = "2026-09-01"  # the default size is 60 days: the history ends 2026-10-31 00:00 UTC
LIVE_ROWS = 42_000  # about 29 days of the default world's traffic under `concept`
DAY = timedelta(days=1)
COMMON = {"THREADS": "1", "LATENCY_REPEATS": "20", "LATENCY_WARMUP": "2", "MODEL": "fraud"}

RUNS = {
    "v1": {"what": "cold start, whole history (before the drift)", "env": {}},
    "stateless": {"what": "cold start, sliding window 1440h (last 39 days of history + the new data)",
                  "env": {"WINDOW": "1440h"}},
    "stateful": {"what": "warm start from v1, only the new data (WINDOW 504h), EPOCHS 5",
                 "env": {"WARM_START": "v1", "WINDOW": "504h", "EPOCHS": "5"}},
    "cold_new_data": {"what": "control: cold start, only the new data (WINDOW 504h), default epochs",
                      "env": {"WINDOW": "504h"}},
}


def _run(argv: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run a child; its stdout, wall seconds and CPU seconds (user + system, its threads and children)."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(argv, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, wall, cpu


def _train(name: str, data: Path, repo: Path, cutoff: datetime | None) -> dict:
    env = {"FLYWHEEL_DATA_DIR": str(data), **{f"FLYWHEEL_TRAINER_{k}": v for k, v in {**COMMON,
           **RUNS[name]["env"]}.items()}}
    argv = [str(PYTHON), "-m", "flywheel_trainer", "train", "--feature-repo", str(ROOT / "feature_repo"),
            "--data", str(data), "--model-repo", str(repo)]
    if cutoff is not None:
        argv += ["--cutoff", cutoff.isoformat()]
    log(f"training {name}: {RUNS[name]['what']}")
    before = set((repo / "fraud").iterdir()) if (repo / "fraud").is_dir() else set()
    _, wall, cpu = _run(argv, env)
    (target,) = [p for p in (repo / "fraud").iterdir() if p not in before and p.name.startswith("v")]
    meta = json.loads((target / "metadata.json").read_text())
    lineage, training = meta["lineage"], meta["lineage"]["training"]
    train_rows = lineage["split"]["train"]["rows"]
    return {
        "version": target.name, "what": RUNS[name]["what"], "settings": RUNS[name]["env"],
        "warm_start": lineage["run"]["warm_start"], "window": lineage["run"]["window"], "cutoff": lineage["cutoff"],
        "served": meta["metrics"]["selected"],
        "own_test_pr_auc": {m: meta["metrics"][m]["test"]["pr_auc"] for m in ("torch", "baseline")},
        "rows": {"labelled_in_window": lineage["rows"]["labelled_at_cutoff"], "frauds": lineage["rows"]["frauds"],
                 "train": train_rows, "seen_by_torch": train_rows * training["epochs_run"]},
        "epochs": {"run": training["epochs_run"], "best": training["best_epoch"]},
        "compute": {"process_wall_s": round(wall, 1), "process_cpu_s": round(cpu, 1),
                    "torch_fit_wall_s": training["compute"]["torch"]["wall_seconds"],
                    "torch_fit_cpu_s": training["compute"]["torch"]["cpu_seconds"],
                    "baseline_fit_cpu_s": training["compute"]["baseline"]["cpu_seconds"]},
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="keep the data and versions here (default: temp)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stateful.json")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="flywheel-stateful-"))
    data, repo = (work / "data").resolve(), (work / "model_repo").resolve()
    env = {"FLYWHEEL_DATA_DIR": str(data)}
    log(f"working in {work}")

    _run([str(PYTHON), "-m", "flywheel_core.sim", "history", "--out", str(data), "--size", "default",
          "--start", HISTORY_START], env)
    _run([str(TRAINER / ".venv" / "bin" / "feast"), "-c", str(ROOT / "feature_repo"), "apply"], env)
    history_end = datetime.fromisoformat(json.loads((data / "simulation.json").read_text())["end"])
    results = {"v1": _train("v1", data, repo, None)}

    live = work / "live.concept.jsonl"
    _run([str(PYTHON), "-m", "flywheel_core.sim", "live", "--scenario", "concept", "--n", str(LIVE_ROWS),
          "--data", str(data), "--out", str(live)], env)
    last = max(json.loads(line)["event_timestamp"] for line in live.read_text().splitlines())
    if datetime.fromisoformat(last.replace("Z", "+00:00")) < history_end + 28 * DAY:
        raise RuntimeError(f"live traffic ends {last}, before L+28d: raise LIVE_ROWS")
    cutoff, window_start, window_end = history_end + 21 * DAY, history_end + 14 * DAY, history_end + 21 * DAY
    steps = [str(PYTHON), str(STEPS)]
    delivered = [json.loads(_run([*steps, "deliver", str(data), str(live), cutoff.isoformat()], env)[0])]
    for name in ("stateless", "stateful", "cold_new_data"):
        results[name] = _train(name, data, repo, cutoff)

    # Four weeks on, every label of the held-out window is known: deliver them, then score every version on it.
    label_cutoff = history_end + 28 * DAY
    delivered.append(json.loads(_run([*steps, "deliver", str(data), str(live), label_cutoff.isoformat()], env)[0]))
    scored = json.loads(_run([*steps, "evaluate", str(data), str(repo), label_cutoff.isoformat(),
                              window_start.isoformat(), window_end.isoformat(),
                              *[r["version"] for r in results.values()]], env)[0])
    for result in results.values():
        result["held_out"] = scored["versions"][result["version"]]
    out = {
        "command": "python3 bench/trainer/stateful.py",
        "date": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "trainer_threads": int(COMMON["THREADS"])},
        "world": {"size": "default", "history_start": HISTORY_START, "history_end": history_end.isoformat(),
                  "scenario": "concept", "live_rows": LIVE_ROWS, "retrain_cutoff": cutoff.isoformat()},
        "deliveries": delivered,
        "held_out_window": scored["window"],
        "runs": results,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


def table(out: dict) -> str:
    rows = ["| run | served | held-out PR-AUC (90% CI) | held-out torch / baseline | own test PR-AUC (served) | "
            "rows trained | epochs (best) | rows seen | torch fit wall / CPU s | trainer process wall / CPU s |",
            "|" + " --- |" * 10]
    for name, r in out["runs"].items():
        h, c = r["held_out"], r["compute"]
        rows.append(
            f"| {name} ({r['version']}) | {r['served']} | {h['pr_auc']:.3f} ({h['pr_auc_ci90'][0]:.3f}-"
            f"{h['pr_auc_ci90'][1]:.3f}) | {h['torch']['pr_auc']:.3f} / {h['baseline']['pr_auc']:.3f} | "
            f"{r['own_test_pr_auc'][r['served']]:.3f} | {r['rows']['train']} | {r['epochs']['run']} "
            f"({r['epochs']['best']}) | {r['rows']['seen_by_torch']} | {c['torch_fit_wall_s']} / "
            f"{c['torch_fit_cpu_s']} | {c['process_wall_s']} / {c['process_cpu_s']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    result = main()
    print(json.dumps(result, indent=2))
    print(table(result))
