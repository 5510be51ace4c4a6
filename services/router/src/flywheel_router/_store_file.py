"""The `file` route source: one JSON file, `{"routes": {"<model>": <Route JSON>, ...}}`.

For `make up` and tests: several local router processes may share one file. Writes take an exclusive
lock (fcntl), check the generation, and replace the file atomically (write + rename), so a reader sees a
whole file or the previous one. Readers poll its (mtime, size, inode) every `poll_interval_s` (and at once
after a write by this process). A missing file is an empty route set; an unreadable one keeps the routes
in force and is logged once.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import orjson
from pydantic import ValidationError

from flywheel_contracts import Route

from ._errors import Conflict, RouteSourceError
from ._store import Apply

log = logging.getLogger("flywheel_router.routes")
_NEVER = object()


class FileRouteSource:
    def __init__(self, path: Path, poll_interval_s: float) -> None:
        self.path = Path(path)
        self.poll_interval_s = poll_interval_s
        self._changed = asyncio.Event()

    async def run(self, apply: Apply) -> None:
        stamp: object = _NEVER  # a missing file (stamp None) is a valid, empty first load
        problem: str | None = None
        while True:
            current = self._stamp()
            if current != stamp:
                try:
                    routes = self._read()
                except RouteSourceError as e:
                    if str(e) != problem:
                        log.error("%s; keeping the routes in force", e)
                        problem = str(e)
                else:
                    apply(routes)
                    stamp, problem = current, None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), self.poll_interval_s)
            except TimeoutError:
                pass

    async def put(self, route: Route) -> Route:
        stored = await asyncio.to_thread(self._put, route)
        self._changed.set()  # apply it here at once; other processes see it at their next poll
        return stored

    async def aclose(self) -> None:
        pass

    # -- file ------------------------------------------------------------------------------------------
    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _read(self) -> dict[str, Route]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise RouteSourceError(f"cannot read the route file {self.path}: {e.strerror}") from e
        return parse_routes(raw, str(self.path))

    def _put(self, route: Route) -> Route:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            routes = self._read()
            stored = routes.get(route.model)
            current = stored.generation if stored else 0
            if route.generation != current:
                raise Conflict(
                    f"route '{route.model}' is at generation {current}, the write was based on {route.generation}: "
                    "read it again and re-apply the change"
                )
            new = route.model_copy(update={"generation": current + 1, "updated_at": datetime.now(timezone.utc)})
            routes[route.model] = new
            document = {"routes": {model: r.to_json() for model, r in sorted(routes.items())}}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
            os.replace(tmp, self.path)
        return new


def parse_routes(raw: bytes, where: str) -> dict[str, Route]:
    """Routes from a route document; any invalid route makes the whole document unreadable (named)."""
    try:
        document = orjson.loads(raw) if raw.strip() else {"routes": {}}
    except orjson.JSONDecodeError as e:
        raise RouteSourceError(f"{where} is not valid JSON: {e}") from e
    entries = document.get("routes") if isinstance(document, dict) else None
    if not isinstance(entries, Mapping):
        raise RouteSourceError(f'{where} must be {{"routes": {{"<model>": <route>, ...}}}}')
    routes = {}
    for model, entry in entries.items():
        try:
            route = Route.model_validate(entry)
        except ValidationError as e:
            raise RouteSourceError(f"{where}: route '{model}' is invalid: {e.errors()[0]['msg']}") from e
        if route.model != model:
            raise RouteSourceError(f"{where}: the route under '{model}' names model '{route.model}'")
        routes[model] = route
    return routes
