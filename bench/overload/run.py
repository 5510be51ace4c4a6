"""Benchmark: the predictor past saturation, with admission control off and on, side by side in one run.

1. Saturation: wrk, closed loop (`--connections`), drives a predictor with admission off; its requests/s is
   the saturation rate R.
2. Open loop at `--fractions` of R (default 0.25, 1 and 2: unloaded, saturated, twice saturated): request i
   is due at start + i/rate and its latency counts from then, so queueing is not hidden (no coordinated
   omission). Each rate is run against two fresh predictors in turn, admission off (MAX_IN_FLIGHT=0) and on
   (the predictor's defaults, or --limits), interleaved over `--rounds`.
3. Per run: achieved rate, p50/p99 of admitted (200) requests, p50/p99/max of the 503 answers, shed share,
   requests that got no answer within `--timeout` (hung), and the server's peak RSS (VmRSS, sampled every
   50 ms) and VmHWM.

The server is pinned to `--server-core`, the load generator to `--load-core` (taskset). The generator is an
asyncio HTTP/1.1 client over raw keep-alive sockets (stdlib only, in the predictor's environment for uvloop),
opening a new connection whenever every open one is busy, up to `--max-connections`.

    services/predictor/.venv/bin/python bench/overload/run.py [--rows 1] [--duration 8] [--rounds 2]

Writes bench/results/overload.json. With no published `fraud` in --model-repo the tiny fixture model
(services/predictor/tests/tiny_model.py) is published into a temporary repo.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREDICTOR = ROOT / "services" / "predictor"
PYTHON = PREDICTOR / ".venv" / "bin" / "python"
MODEL = "fraud"
PATH = f"/v1/models/{MODEL}:predict"

sys.path.insert(0, str(ROOT / "bench"))
from benchkit import cpu_model, free_port, latest_version, log, lua_script, parse_wrk  # noqa: E402


def model_repo(repo: Path, scratch: Path) -> tuple[Path, Path, str]:
    version = latest_version(repo, MODEL)
    if version is not None:
        return repo, version, f"{MODEL} {version.name} from {repo}"
    tiny = scratch / "model_repo"
    subprocess.run(
        [str(PYTHON), str(PREDICTOR / "tests" / "tiny_model.py"), "--repo", str(tiny)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return tiny, latest_version(tiny, MODEL), f"tiny fixture model (no published '{MODEL}' in {repo})"


class Predictor:
    """`python -m flywheel_predictor` pinned to a core, with admission control off or on."""

    def __init__(self, repo: Path, core: str, limits: dict[str, str] | None) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_PREDICTOR_")}
        env.update(
            FLYWHEEL_PREDICTOR_MODEL_REPO=str(repo),
            FLYWHEEL_PREDICTOR_HTTP_HOST="127.0.0.1",
            FLYWHEEL_PREDICTOR_HTTP_PORT=str(self.port),
            FLYWHEEL_PREDICTOR_VARIANT="fp32",
            FLYWHEEL_PREDICTOR_PROVIDERS="CPUExecutionProvider",
        )
        env.update({"FLYWHEEL_PREDICTOR_MAX_IN_FLIGHT": "0"} if limits is None else limits)
        self.process = subprocess.Popen(
            ["taskset", "-c", core, str(PYTHON), "-m", "flywheel_predictor"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"predictor exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("predictor not ready after 90 s")

    def memory_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Connections:
    """Keep-alive HTTP/1.1 connections to one server: an idle one if any, else a new one (up to a cap)."""

    def __init__(self, port: int, cap: int) -> None:
        self.port, self.cap, self.open = port, cap, 0
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.freed = asyncio.Condition()

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while True:
            if self.idle:
                return self.idle.pop()
            if self.open < self.cap:
                self.open += 1
                try:
                    return await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    self.open -= 1
                    raise
            async with self.freed:
                await self.freed.wait()

    async def give(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        if conn is None:
            self.open -= 1
        else:
            self.idle.append(conn)
        async with self.freed:
            self.freed.notify()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> tuple[int, bool]:
    """Send one request and read its answer: (status, connection still usable)."""
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, close = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    await reader.readexactly(length)
    return status, not close


async def open_loop(port: int, request: bytes, rate: float, duration: float, timeout: float, cap: int,
                    server: Predictor) -> dict:
    pool = Connections(port, cap)
    n = int(rate * duration)
    ok: list[float] = []
    shed: list[float] = []
    other: dict[str, int] = {}
    hung = 0
    rss_peak = server.memory_kib("VmRSS")
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(due: float) -> None:
        nonlocal hung
        conn = None
        try:
            async with asyncio.timeout(timeout):
                conn = await pool.take()
                status, reusable = await exchange(conn, request)
        except TimeoutError:
            hung += 1
            if conn is not None:
                conn[1].close()
            await pool.give(None)
            return
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            other[type(e).__name__] = other.get(type(e).__name__, 0) + 1
            if conn is not None:
                conn[1].close()
                await pool.give(None)
            return
        latency = loop.time() - due
        if status == 200:
            ok.append(latency)
        elif status == 503:
            shed.append(latency)
        else:
            other[str(status)] = other.get(str(status), 0) + 1
        if reusable:
            await pool.give(conn)
        else:
            conn[1].close()
            await pool.give(None)

    async def sample_memory() -> None:
        nonlocal rss_peak
        while True:
            rss_peak = max(rss_peak, server.memory_kib("VmRSS"))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample_memory())
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    sampler.cancel()
    pool.close()
    ok.sort()
    shed.sort()
    return {
        "target_rps": round(rate, 1),
        "achieved_rps": round(n / elapsed, 1),
        "requests": n,
        "admitted": len(ok),
        "shed_503": len(shed),
        "shed_share": round(len(shed) / n, 4) if n else 0.0,
        "hung": hung,
        "other": other,
        "admitted_p50_ms": _ms(ok, 0.50),
        "admitted_p99_ms": _ms(ok, 0.99),
        "admitted_max_ms": _ms(ok, 1.0),
        "shed_p50_ms": _ms(shed, 0.50),
        "shed_p99_ms": _ms(shed, 0.99),
        "shed_max_ms": _ms(shed, 1.0),
        "rss_peak_mib": round(rss_peak / 1024, 1),
        "connections_opened": pool.open,
    }


def _ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 2)


def saturation(repo: Path, body: str, args: argparse.Namespace, scratch: Path) -> dict:
    server = Predictor(repo, args.server_core, None)
    try:
        script = lua_script(scratch / "post.lua", body)
        url = f"http://127.0.0.1:{server.port}{PATH}"
        command = [
            "taskset",
            "-c",
            args.load_core,
            "wrk",
            "-t1",
            f"-c{args.connections}",
            "-d{}s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        subprocess.run([c.format(1) for c in command], capture_output=True, text=True, check=True)  # warm-up
        result = subprocess.run(
            [c.format(args.saturation_duration) for c in command], capture_output=True, text=True, check=True
        )
        return parse_wrk(result.stdout)
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, default=ROOT / "model_repo")
    parser.add_argument("--rows", type=int, default=1, help="rows per V1 request")
    parser.add_argument("--fractions", default="0.25,1,2", help="open-loop rates as fractions of the saturation rate")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per open-loop run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (off, on, off, on, ...)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections when finding saturation")
    parser.add_argument("--saturation-duration", type=int, default=5)
    parser.add_argument("--saturation-rps", type=float, help="skip the wrk measurement and use this rate")
    parser.add_argument("--limits", action="append", default=[],
                        help="admission settings of one 'on' mode, e.g. MAX_IN_FLIGHT=4,MAX_WAIT_MS=5 (repeatable; "
                        "'defaults' is the predictor's own; default: defaults only)")
    parser.add_argument("--timeout", type=float, default=10.0, help="a request without an answer by then is hung")
    parser.add_argument("--max-connections", type=int, default=2048)
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--load-core", default="1")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overload.json")
    args = parser.parse_args()

    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None and not (tool == "wrk" and args.saturation_rps):
            log(f"{tool} is not installed: apt-get install -y {'wrk' if tool == 'wrk' else 'util-linux'}")
            return 2
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    os.sched_setaffinity(0, {int(args.load_core)})
    modes: dict[str, dict[str, str] | None] = {"off": None}
    for spec in args.limits or ["defaults"]:
        modes["on " + spec] = {f"FLYWHEEL_PREDICTOR_{k.strip().upper()}": v.strip() for k, _, v in
                               (part.partition("=") for part in spec.split(",") if part.strip() and spec != "defaults")}

    with tempfile.TemporaryDirectory(prefix="bench-overload-") as scratch:
        repo, version, description = model_repo(args.model_repo.resolve(), Path(scratch))
        dim = int(json.loads((version / "metadata.json").read_text())["input"]["shape"][1])
        row = [round(0.1 * (i % 7) + 0.05, 2) for i in range(dim)]
        body = json.dumps({"instances": [row] * args.rows})
        request = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
        if args.saturation_rps:
            closed = {"requests_per_s": args.saturation_rps, "given": True}
        else:
            closed = saturation(repo, body, args, Path(scratch))
        rate_sat = closed["requests_per_s"]
        log(f"model: {description}; {args.rows} row(s)/request; saturation {rate_sat:.0f} req/s "
            f"(wrk, {args.connections} connections, admission off)")
        fractions = [float(f) for f in args.fractions.split(",")]
        runs: dict[str, dict[str, list[dict]]] = {str(f): {mode: [] for mode in modes} for f in fractions}
        for index in range(args.rounds):
            for fraction in fractions:
                for mode, limits in modes.items():
                    server = Predictor(repo, args.server_core, limits)
                    try:
                        port = server.port
                        run(
                            open_loop(
                                port, request, min(200.0, rate_sat / 4), 1.0, args.timeout, args.max_connections, server
                            )
                        )
                        figures = run(open_loop(port, request, fraction * rate_sat, args.duration, args.timeout,
                                                args.max_connections, server))
                        figures["vm_hwm_mib"] = round(server.memory_kib("VmHWM") / 1024, 1)
                    finally:
                        server.stop()
                    runs[str(fraction)][mode].append(figures)
                    log(f"round {index + 1} x{fraction:<4} {mode}: {figures['achieved_rps']:7.0f} req/s "
                        f"admitted p50 {figures['admitted_p50_ms']} p99 {figures['admitted_p99_ms']} ms, "
                        f"shed {100 * figures['shed_share']:.1f}% (p99 {figures['shed_p99_ms']} ms), hung "
                        f"{figures['hung']}, other {figures['other']}, RSS peak {figures['rss_peak_mib']} MiB")

    def median(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 2) if values else None

    keys = ("achieved_rps", "admitted_p50_ms", "admitted_p99_ms", "admitted_max_ms", "shed_share", "shed_p50_ms",
            "shed_p99_ms", "shed_max_ms", "hung", "rss_peak_mib", "vm_hwm_mib")
    summary = {
        fraction: {mode: {key: median([r[key] for r in rounds]) for key in keys} for mode, rounds in by_mode.items()}
        for fraction, by_mode in runs.items()
    }
    unloaded = summary[str(fractions[0])]["off"]["admitted_p99_ms"]
    result = {
        "benchmark": "overload",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": cpu_model(),
            "load_average_at_end": os.getloadavg(),
        },
        "setup": {
            "server": "python -m flywheel_predictor, 1 worker, VARIANT=fp32, CPUExecutionProvider",
            "model": description,
            "request": f"V1, {args.rows} row(s)",
            "modes": {
                mode: ("FLYWHEEL_PREDICTOR_MAX_IN_FLIGHT=0" if limits is None else limits or "the predictor's defaults")
                for mode, limits in modes.items()
            },
            "saturation": closed,
            "load": "open loop; latency from each request's due time; raw keep-alive HTTP/1.1 connections",
            "duration_s": args.duration,
            "rounds": args.rounds,
            "timeout_s": args.timeout,
            "server_core": args.server_core,
            "load_core": args.load_core,
            "statistic": "median over rounds of each run's figure",
        },
        "saturation_rps": rate_sat,
        "summary": summary,
        "admitted_p99_over_unloaded_p99": {
            fraction: {
                mode: (
                    round(figures["admitted_p99_ms"] / unloaded, 2) if unloaded and figures["admitted_p99_ms"] else None
                )
                for mode, figures in by_mode.items()
            }
            for fraction, by_mode in summary.items()
        },
        "notes": [
            "unloaded p99: admitted p99 at the lowest fraction with admission off.",
            (
                "shed latency counts from the due time too: it includes any wait in the kernel and the event loop "
                "before the server reads the request."
            ),
        ],
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
