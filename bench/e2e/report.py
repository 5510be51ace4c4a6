"""The tables of bench/e2e/cost.py's record, as they go into docs/benchmarks.md, and its progress line."""

from __future__ import annotations

SERVICES = ("router", "transformer", "features", "predictor", "drift")
# Issue 12's goals, per transaction with inference logging on.
GOALS = {
    "server_cpu_us_per_transaction": 4000,
    "transformer_cpu_us_per_transaction": 1500,
    "drift_cpu_us_per_inference": 500,
    "capacity_multiple_of_baseline": 4,
    "p99_ms_at_100_rps": 15,
}
_HIDDEN_LABELS = ("model", "version", "variant")


def step_line(step: dict) -> str:
    cpu = step.get("cpu_us_per_scored_transaction", {})
    return (f"{step['target_rps']:>5g} req/s: achieved {step['achieved_rps']:g}, {step['errors']} errors, "
            f"p50/p90/p99/max {step['p50_ms']:g}/{step['p90_ms']:g}/{step['p99_ms']:g}/{step['max_ms']:g} ms | "
            f"CPU-us/scored {', '.join(f'{k} {v}' for k, v in cpu.items())} | "
            f"vegeta {step['generator_cpu_us_per_request']} | other load {step['other_processes_cores']} cores | "
            f"drain {step['drain_s']} s")


def _stage_name(service: str, row: dict) -> str:
    short = row["metric"].removeprefix(f"flywheel_{service}_")
    labels = ", ".join(f"{k}={v}" for k, v in row["labels"].items() if k not in _HIDDEN_LABELS)
    return f"{service}: {short}" + (f" ({labels})" if labels else "")


def stage_rows(step: dict) -> dict[str, tuple[float, float | None, bool, float]]:
    """Stage name -> (mean ms, p99 ms, p99 a floor, calls per scored transaction) of the services' own histograms, plus
    the transformer's own work (its request time minus the feature lookup and predictor calls it waited on)."""
    rows = {}
    scored = max(1, step["status_codes"].get("200", 0))
    for service in SERVICES:
        for row in step["stages"].get(service, []):
            # Only the services' own series, and not the scrapes of /metrics this benchmark makes.
            if row["metric"].startswith("flywheel_") and row["labels"].get("endpoint") != "/metrics":
                rows[_stage_name(service, row)] = (row["mean_ms"], row["p99_ms"], row["p99_past_buckets"],
                                                   row["count"] / scored)
        if service == "transformer":
            means = {name: v[0] for name, v in rows.items()}
            waited = [means.get(f"transformer: {s}_seconds") for s in ("request", "feature_lookup", "predictor")]
            if None not in waited:
                rows["transformer: request - lookup - predictor (derived)"] = (
                    round(waited[0] - waited[1] - waited[2], 3), None, False, rows["transformer: request_seconds"][3])
    return rows


def _reference_step(steps: list[dict]) -> dict | None:
    """The step whose CPU figures stand for today: the highest rate answered without errors (below saturation,
    where every request does the whole path's work), else the first."""
    clean = [s for s in steps if s["errors"] == 0]
    return clean[-1] if clean else (steps[0] if steps else None)


def markdown(result: dict) -> str:
    steps = result["steps"]
    columns = ["rate (req/s)", "achieved", "errors", "p50 / p90 / p99 / max ms", *SERVICES, "server total",
               "net of idle", "vegeta", "other load (cores)"]
    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join(["---"] * len(columns)) + " |"]
    for s in steps:
        cpu = s.get("cpu_us_per_scored_transaction", dict.fromkeys((*SERVICES, "total"), 0))
        net = s.get("cpu_us_per_scored_transaction_net_of_idle", {})
        out.append(
            f"| {s['target_rps']:g} | {s['achieved_rps']:g} | {s['errors']} | "
            f"{s['p50_ms']:g} / {s['p90_ms']:g} / {s['p99_ms']:g} / {s['max_ms']:g} | "
            + " | ".join(f"{cpu[k]:,}" for k in SERVICES)
            + f" | **{cpu['total']:,}** | {net.get('total', 0):,} | {s['generator_cpu_us_per_request']:,} | "
            f"{s['other_processes_cores']} |"
        )
    out += ["", "CPU columns: CPU-microseconds per scored transaction (answered 200) of each service's process "
            "tree; vegeta's per request sent.", ""]

    per_step = [stage_rows(s) for s in steps]
    names = list(dict.fromkeys(name for rows in per_step for name in rows))  # path order, as first seen
    rates = " | ".join(f"{s['target_rps']:g} req/s" for s in steps)
    out.append(f"| stage (mean / p99 ms) | calls per scored transaction | {rates} |")
    out.append("| " + " | ".join(["---"] * (2 + len(steps))) + " |")
    for name in names:
        calls = [rows[name][3] for rows in per_step if name in rows]
        varies = max(calls) - min(calls) > 0.05 * max(calls)  # e.g. stream posts, batched once they overlap
        cells = []
        for rows in per_step:
            if name not in rows:
                cells.append("-")
                continue
            mean, p99, floor, per_request = rows[name]
            cells.append(f"{mean:.2f}" + ("" if p99 is None else f" / {'>' if floor else ''}{p99:.1f}")
                         + (f" ({per_request:.2g} a transaction)" if varies else ""))
        shown = f"{min(calls):.2g}-{max(calls):.2g}, by step" if varies else f"{calls[0]:.3g}"
        out.append(f"| {name} | {shown} | " + " | ".join(cells) + " |")

    ref = _reference_step(steps)
    at_100 = next((s for s in steps if s["target_rps"] == 100), None)
    if ref is not None:
        goals, cpu = result["goals"], ref.get("cpu_us_per_scored_transaction", {})
        every = result.get("cpu_us_per_scored_transaction_all_steps", {})

        def today(key: str) -> str:
            return f"{cpu[key]:,} us" + (f" ({every[key]:,} over all steps)" if key in every else "")

        capacity, multiple = result["capacity_rps"], goals["capacity_multiple_of_baseline"]
        out += [
            "",
            f"| goal (issue 12) | target | today (CPU at {ref['target_rps']:g} req/s) |",
            "| --- | --- | --- |",
            f"| server CPU per transaction, all services | <= {goals['server_cpu_us_per_transaction']:,} us | "
            f"{today('total')} |",
            f"| transformer's share | <= {goals['transformer_cpu_us_per_transaction']:,} us | {today('transformer')} |",
            f"| drift per inference | <= {goals['drift_cpu_us_per_inference']:,} us | {today('drift')} |",
            f"| capacity (p99 <= {result['setup']['slo_p99_ms']:g} ms, no errors) | >= "
            f"{multiple}x this run's" + (f" = {multiple * capacity:g} req/s" if capacity else "")
            + f" | {f'{capacity:g} req/s' if capacity else 'no step held'} |",
            f"| p99 at 100 req/s | <= {goals['p99_ms_at_100_rps']} ms | "
            + (f"{at_100['p99_ms']:g} ms ({at_100['errors']} errors) |" if at_100 else "not measured |"),
        ]
    return "\n".join(out)
