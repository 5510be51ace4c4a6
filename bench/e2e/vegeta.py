"""vegeta, the open-loop constant-rate load generator, built from Go modules on first use and run per step.

A Go binary rather than a Python client, so that the generator costs a small, measured share of the CPU
(issue 12: the httpx client cost 3,600 CPU-us a request, more than the predictor). `vegeta attack` sends at
a fixed rate whatever the answers do (it starts more workers rather than waiting), and its own report
gives latencies from each request's send to its whole answer. Standard library only.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MODULE = "github.com/tsenart/vegeta/v12"
VERSION = "v12.13.0"  # the newest on proxy.golang.org when this was written
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flywheel-bench" / "bin"


def ensure(log, cache: Path = CACHE) -> Path:
    """The vegeta binary in `cache`, built with `go install` (Go module proxy) the first time."""
    binary = cache / "vegeta"
    if binary.exists() and subprocess.run([binary, "-version"], capture_output=True).returncode == 0:
        return binary
    go = shutil.which("go")
    if go is None:
        raise SystemExit(f"vegeta is not in {cache} and there is no `go` to build it: install Go "
                         f"(https://go.dev/dl/) or put a vegeta {VERSION} binary there")
    log(f"building vegeta {VERSION} from Go modules into {cache} (first use only, about a minute) ...")
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(cache), "GOFLAGS": "-mod=mod"}
    subprocess.run([go, "install", f"{MODULE}@{VERSION}"], env=env, check=True)
    return binary


def write_targets(path: Path, url: str, bodies: list[bytes]) -> Path:
    """vegeta's JSON targets format: one POST per line, each with its own body; sent once each, in order."""
    with path.open("w") as out:
        for body in bodies:
            target = {"method": "POST", "url": url, "body": base64.b64encode(body).decode(),
                      "header": {"Content-Type": ["application/json"]}}
            out.write(json.dumps(target) + "\n")
    return path


@dataclass
class Attack:
    report: dict
    """`vegeta report -type=json` as it came (latencies in nanoseconds)."""
    cpu_s: float
    """User + system CPU seconds of the `vegeta attack` process itself."""
    wall_s: float

    def summary(self) -> dict:
        lat = self.report["latencies"]
        codes = {str(k): v for k, v in (self.report.get("status_codes") or {}).items()}
        requests = self.report["requests"]
        ok = codes.get("200", 0)
        return {
            "requests": requests,
            "achieved_rps": round(self.report["rate"], 2),
            "throughput_rps": round(self.report["throughput"], 2),
            "errors": requests - ok,
            "status_codes": codes,
            "error_messages": sorted(set(self.report.get("errors") or []))[:5],
            **{f"{name}_ms": round(lat[key] / 1e6, 2) for name, key in
               (("p50", "50th"), ("p90", "90th"), ("p95", "95th"), ("p99", "99th"), ("max", "max"), ("mean", "mean"))},
            "generator_cpu_s": round(self.cpu_s, 3),
            "generator_cpu_us_per_request": round(1e6 * self.cpu_s / requests, 1) if requests else None,
        }


def attack(binary: Path, targets: Path, rate: float, duration_s: float, results: Path, cpu: int | None,
           timeout_s: float = 10.0) -> Attack:
    """Send `targets` at `rate` per second for `duration_s`, pinned to core `cpu` (None: anywhere)."""
    argv = [str(binary), "attack", "-format=json", f"-targets={targets}", f"-rate={rate:g}/1s",
            f"-duration={duration_s:g}s", f"-timeout={timeout_s:g}s", "-max-body=0", f"-output={results}"]
    env = dict(os.environ)
    if cpu is not None:
        # taskset execs vegeta in place, so the pid (and the rusage below) is vegeta's; one core, one P.
        argv = ["taskset", "-c", str(cpu), *argv]
        env["GOMAXPROCS"] = "1"
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if process.returncode != 0:
        raise RuntimeError(f"vegeta attack exited with {process.returncode}: {stderr.strip()}")
    report = subprocess.run([str(binary), "report", "-type=json", str(results)], capture_output=True, check=True)
    return Attack(json.loads(report.stdout), usage.ru_utime + usage.ru_stime, wall)
