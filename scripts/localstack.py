"""The local stack: Flywheel's services as real processes on loopback, started and stopped together.

`make up` (scripts/up.py) and the integration tests (tests/) both start the stack through this module,
so what the tests prove is what a user runs. Standard library only: it runs on the bare interpreter.
Each service runs from its own project's .venv and binds 127.0.0.1 only. Services start as soon as the
ones they need are ready (most need none), so the stack is ready in about the time of its slowest
service. Logs go to one plain-text file per service; the previous run's file moves to `previous/`.
"""

from __future__ import annotations

import json
import os
import runpy
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"

# Log files are read, grepped and diffed, not shown on a terminal: no colour codes, whatever the user's
# shell asks for (libraries honour NO_COLOR; TERM=dumb covers the rest), and no output held back in a
# buffer that a crash would lose.
PLAIN_OUTPUT_ENV = {"NO_COLOR": "1", "TERM": "dumb", "PY_COLORS": "0", "PYTHONUNBUFFERED": "1"}
_COLOUR_FORCING_ENV = ("FORCE_COLOR", "CLICOLOR_FORCE")


@dataclass(frozen=True)
class Ports:
    features: int = 6566
    predictor: int = 8080
    transformer: int = 8090
    drift: int = 8070
    router: int = 8000
    router_admin: int = 8001


@dataclass
class Service:
    """One process of the stack and how to tell it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None
    after: tuple[str, ...] = ()
    """Services of the same stack that must be ready before this one starts (names; others are ignored)."""
    ready_after_s: float | None = None
    """Seconds from this service's start to its first ready answer (None until then)."""

    def start(self, log_dir: Path, append: bool = False) -> None:
        """Start the process, its output to `<log_dir>/<name>.log`.

        Without `append`, an existing log (a previous run's, perhaps a crash) first moves to
        `<log_dir>/previous/<name>.log`, replacing the one before it.
        """
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        if not append and self.log_path.exists():
            previous = log_dir / "previous"
            previous.mkdir(exist_ok=True)
            self.log_path.replace(previous / self.log_path.name)
        env = {k: v for k, v in os.environ.items() if k not in _COLOUR_FORCING_ENV}
        log = open(self.log_path, "ab" if append else "wb")
        # A new session per service, so stopping it stops its worker processes too.
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env={**env, **PLAIN_OUTPUT_ENV, **self.env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.ready_after_s = None

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


# Standard library only, like this module: run by path, as this module has no venv to import it from.
free_port: Callable[[], int] = runpy.run_path(
    str(ROOT / "libs" / "flywheel-contracts" / "src" / "flywheel_contracts" / "ports.py"))["free_port"]


def venv_python(project: str) -> str:
    python = ROOT / project / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run `make install` first")
    return str(python)


def default_services(
    model_repo: Path,
    data_dir: Path,
    ports: Ports = Ports(),
    extra_env: Mapping[str, str] | None = None,
    drift: bool = True,
) -> list[Service]:
    """The services wired to each other on loopback: the router in front of the transformer, which logs
    every inference to drift.

    With `drift=False` the transformer's events go wherever `extra_env` says (or nowhere). Every service
    binds 127.0.0.1. None needs another at start-up (each reads the model repo or its own files; calls
    between them happen per request), so they all start at once.
    """
    host = LOOPBACK
    sink = {"FLYWHEEL_TRANSFORMER_EVENT_SINK_URL": f"http://{host}:{ports.drift}/"} if drift else {}
    common = {"FLYWHEEL_DATA_DIR": str(data_dir), **sink, **(extra_env or {})}
    drift_service = Service(
        "drift",
        [venv_python("services/drift"), "-m", "flywheel_drift"],
        {
            **common,
            "FLYWHEEL_DRIFT_HTTP_PORT": str(ports.drift),
            "FLYWHEEL_DRIFT_HTTP_HOST": host,
            "FLYWHEEL_DRIFT_MODEL_REPO": str(model_repo),
            "FLYWHEEL_DRIFT_SPOOL_DIR": str(Path(data_dir) / "drift"),
            **drift_token_env(data_dir),
        },
        f"http://{host}:{ports.drift}/ready",
    )
    return [drift_service] * drift + [
        Service(
            "features",
            [venv_python("services/features"), "-m", "flywheel_features"],
            {**common, "FLYWHEEL_FEATURES_HOST": host, "FLYWHEEL_FEATURES_PORT": str(ports.features),
             "FLYWHEEL_FEATURES_READ_TOKEN_FILE": str(token(data_dir, "features-read")),
             "FLYWHEEL_FEATURES_WRITE_TOKEN_FILE": str(token(data_dir, "features-write"))},
            f"http://{host}:{ports.features}/ready",
        ),
        Service(
            "predictor",
            [venv_python("services/predictor"), "-m", "flywheel_predictor"],
            {**common, "FLYWHEEL_PREDICTOR_MODEL_REPO": str(model_repo), "FLYWHEEL_PREDICTOR_HTTP_HOST": host,
             "FLYWHEEL_PREDICTOR_HTTP_PORT": str(ports.predictor)},
            f"http://{host}:{ports.predictor}/v2/health/ready",
        ),
        Service(
            "transformer",
            [venv_python("services/transformer"), "-m", "flywheel_transformer"],
            {
                **common,
                "FLYWHEEL_TRANSFORMER_HTTP_HOST": host,
                "FLYWHEEL_TRANSFORMER_HTTP_PORT": str(ports.transformer),
                "FLYWHEEL_TRANSFORMER_MODEL_REPO": str(model_repo),
                "FLYWHEEL_TRANSFORMER_PREDICTOR_URL": f"http://{host}:{ports.predictor}",
                "FLYWHEEL_TRANSFORMER_FEATURES_URL": f"http://{host}:{ports.features}",
                "FLYWHEEL_TRANSFORMER_FEATURES_TOKEN_FILE": str(token(data_dir, "features-read")),
                "FLYWHEEL_TRANSFORMER_EVENT_TOKEN_FILE": str(token(data_dir, "drift-ingest")),
                # Every scored transaction updates its card's online features (the features service's stream
                # step), so live traffic is served the state training joined; the write token lets it push.
                "FLYWHEEL_TRANSFORMER_FEATURE_STREAM_URL": f"http://{host}:{ports.features}",
                "FLYWHEEL_TRANSFORMER_FEATURE_STREAM_TOKEN_FILE": str(token(data_dir, "features-write")),
                # Locally a developer may see the exact model input (x-flywheel-debug-features), still
                # only with the debug token; the chart leaves it off.
                "FLYWHEEL_TRANSFORMER_DEBUG_FEATURES": "true",
                "FLYWHEEL_TRANSFORMER_DEBUG_TOKEN_FILE": str(token(data_dir, "transformer-debug")),
                # The simulator's live traffic continues the history from its last midnight and replays simulated
                # time faster than the clock (4,000 transactions span about three days), so its timestamps run ahead
                # of the wall clock; the production default (300 s) would refuse them as impossible.
                "FLYWHEEL_TRANSFORMER_MAX_FUTURE_SKEW_S": str(30 * 24 * 3600),
                **(extra_env or {}),
            },
            f"http://{host}:{ports.transformer}/v2/health/ready",
        ),
        router_service(data_dir, ports, f"http://{host}:{ports.transformer}"),
    ]


# The credentials of the local stack, one token file each (owner-only, made once, kept across runs), named
# as in the chart's Secrets and docs/security.md: who holds a file can do what its name says.
TOKENS = ("drift-ingest", "drift-labels", "drift-skew", "features-read", "features-write", "transformer-debug")


def _token_file(path: Path) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return path


def router_token(data_dir: Path) -> Path:
    """The local router's admin token file (made once, owner-only): `make up` prints where it is."""
    return _token_file(Path(data_dir) / "router" / "token")


def token(data_dir: Path, name: str) -> Path:
    """The token file of one credential of TOKENS, under `<data>/tokens/` (made once, owner-only)."""
    if name not in TOKENS:
        raise ValueError(f"unknown credential {name!r}; known: {', '.join(TOKENS)}")
    return _token_file(Path(data_dir) / "tokens" / name)


def bearer(path: Path) -> dict[str, str]:
    """The Authorization header that presents the token in `path`."""
    return {"authorization": f"Bearer {Path(path).read_text().strip()}"}


def drift_token_env(data_dir: Path) -> dict[str, str]:
    """The drift service's credentials: who may send it inference events and batches, who may label, and who
    may read served rows for the skew check (`python -m flywheel_trainer skew`)."""
    return {
        "FLYWHEEL_DRIFT_INGEST_TOKEN_FILE": str(token(data_dir, "drift-ingest")),
        "FLYWHEEL_DRIFT_LABELS_TOKEN_FILE": str(token(data_dir, "drift-labels")),
        "FLYWHEEL_DRIFT_SKEW_TOKEN_FILE": str(token(data_dir, "drift-skew")),
    }


def router_service(data_dir: Path, ports: Ports, upstream: str, name: str = "router") -> Service:
    """The router in front of `upstream` (the transformer), its routes in `<data>/router/routes.json`."""
    host = LOOPBACK
    return Service(
        name,
        [venv_python("services/router"), "-m", "flywheel_router"],
        {
            "FLYWHEEL_ROUTER_HTTP_HOST": host,
            "FLYWHEEL_ROUTER_HTTP_PORT": str(ports.router),
            "FLYWHEEL_ROUTER_ADMIN_HOST": host,
            "FLYWHEEL_ROUTER_ADMIN_PORT": str(ports.router_admin),
            "FLYWHEEL_ROUTER_DEFAULT_UPSTREAM": upstream,
            "FLYWHEEL_ROUTER_ROUTES_FILE": str(Path(data_dir) / "router" / "routes.json"),
            "FLYWHEEL_ROUTER_TOKEN_FILE": str(router_token(data_dir)),
        },
        f"http://{host}:{ports.router}/v2/health/ready",
    )


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError as e:
        e.close()  # a not-ready answer (503) still holds its connection open
        return False
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class StackError(RuntimeError):
    """A service exited or did not become ready; the message carries its log tail."""


class Stack:
    """Start services (each once those in its `after` are ready), wait for all to be ready, stop them all on exit.

    `on_ready(service)` is called as each becomes ready (from the thread that entered the stack), for progress.
    """

    POLL_INTERVAL_S = 0.05  # a readiness probe is one loopback request: poll often, report readiness promptly

    def __init__(
        self,
        services: Iterable[Service],
        log_dir: Path,
        ready_timeout_s: float = 180.0,
        on_ready: Callable[[Service], None] | None = None,
    ):
        self.services = list(services)
        self.log_dir = log_dir
        self.ready_timeout_s = ready_timeout_s
        self.on_ready = on_ready
        self._stopping = threading.Event()

    def __enter__(self) -> Stack:
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __getitem__(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def _start_all(self) -> None:
        """Start every service whose `after` are ready, wait (in threads) for any to become ready, repeat."""
        names = {s.name for s in self.services}
        ready: set[str] = set()
        pending = list(self.services)
        self._stopping.clear()
        with ThreadPoolExecutor(max(1, len(self.services)), thread_name_prefix="stack-ready") as pool:
            waiting: dict[Future, Service] = {}
            try:
                while pending or waiting:
                    startable = [s for s in pending if all(n in ready or n not in names for n in s.after)]
                    for service in startable:
                        pending.remove(service)
                        service.start(self.log_dir)
                        waiting[pool.submit(self._wait_ready, service)] = service
                    if not waiting:
                        blocked = ", ".join(f"{s.name} (after {', '.join(s.after)})" for s in pending)
                        raise StackError(f"these services wait for each other and can never start: {blocked}")
                    done, _ = wait(waiting, return_when=FIRST_COMPLETED)
                    for future in done:
                        service = waiting.pop(future)
                        future.result()  # StackError: exited or not ready in time
                        ready.add(service.name)
                        if self.on_ready is not None:
                            self.on_ready(service)
            finally:
                self._stopping.set()  # the other waits return at once; the caller stops the processes

    def _wait_ready(self, service: Service) -> None:
        started = time.monotonic()
        deadline = started + self.ready_timeout_s
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise StackError(f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}")
            if _is_ready(service.ready_url):
                service.ready_after_s = time.monotonic() - started
                return
            if self._stopping.wait(self.POLL_INTERVAL_S):
                return
        raise StackError(
            f"{service.name} not ready at {service.ready_url} after {self.ready_timeout_s:.0f} s:\n{service.log_tail()}"
        )

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def kill(self, name: str) -> None:
        """Kill a service abruptly (SIGKILL), as a crash would."""
        process = self[name].process
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def restart(self, name: str) -> None:
        service = self[name]
        service.stop()
        service.start(self.log_dir, append=True)
        self._stopping.clear()
        self._wait_ready(service)


def post_json(
    url: str, body: object, timeout_s: float = 10.0, headers: Mapping[str, str] | None = None
) -> tuple[int, dict]:
    """POST JSON, return (status, parsed body) for 2xx and 4xx/5xx alike."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


if __name__ == "__main__":
    sys.exit("import this module; run scripts/up.py to start the stack")
