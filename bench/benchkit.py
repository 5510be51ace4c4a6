"""What every wrk-driven benchmark here needs: stdlib only, so the bench scripts run on the bare interpreter.

`lua_script` writes wrk's POST script, `parse_wrk` reads its `--latency` output, `cpu_seconds` reads a
process's CPU time from /proc (CPU per request is steadier than requests/s on a shared machine).
"""

from __future__ import annotations

import os
import platform
import re
import runpy
import sys
from collections.abc import Callable
from pathlib import Path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def latest_version(repo: Path, model: str) -> Path | None:
    """The newest published version directory of `model` in `repo`, or None."""
    root = repo / model
    versions = [
        (int(child.name[1:]), child)
        for child in (root.iterdir() if root.is_dir() else [])
        if re.fullmatch(r"v\d+", child.name) and (child / "metadata.json").is_file()
    ]
    return max(versions)[1] if versions else None


# A port outside the kernel's ephemeral range (flywheel_contracts.ports, standard library only, run by path).
free_port: Callable[[], int] = runpy.run_path(
    str(Path(__file__).resolve().parents[1] / "libs/flywheel-contracts/src/flywheel_contracts/ports.py"))["free_port"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lua_script(path: Path, body: str, extra: str = "") -> Path:
    """A wrk script that POSTs `body` as JSON, plus any `extra` Lua."""
    escaped = body.replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(
        f'wrk.method = "POST"\nwrk.body = "{escaped}"\nwrk.headers["Content-Type"] = "application/json"\n{extra}'
    )
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(output: str) -> dict:
    """Requests/s, p50/p99 (ms), request and error counts from wrk's `--latency` output."""

    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not match:
            raise RuntimeError(f"no {percent}% latency in wrk output:\n{output}")
        return float(match.group(1)) * _UNITS[match.group(2)]

    rps, total = re.search(r"Requests/sec:\s+([\d.]+)", output), re.search(r"(\d+) requests in", output)
    if not rps or not total:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors:.*", output)
    return {
        "requests_per_s": float(rps.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": int(total.group(1)),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(0) if socket_errors else "",
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def session_cpu_seconds(sid: int) -> float:
    """User + system CPU time of every process in session `sid` (a service started with start_new_session:
    its workers and helpers too), threads included, plus what its exited children had used once reaped
    (cutime/cstime), so a worker that exits between two readings keeps its share."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while listing
            continue
        if int(fields[3]) == sid:
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU time the whole machine spent busy (all cores; /proc/stat minus idle and iowait), for telling how
    much of it other processes used during a measurement."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
