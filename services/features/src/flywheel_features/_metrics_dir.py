"""Where this service's Prometheus multiprocess files live, and that they go away.

Feast's feature server, which this service runs, imports `feast.metrics`, and that module puts
prometheus_client into multiprocess mode (values in files, so several workers add up on /metrics) in a
fresh `/tmp/feast_metrics_*` directory unless PROMETHEUS_MULTIPROCESS_DIR is set. It removes the directory
in an atexit hook, which a stopped server never reached: uvicorn re-raises SIGTERM after its graceful
shutdown and the default handler killed the process (fixed in _server.serve); SIGKILL skips it anyway.
Every server start left one behind: 31 of them in /tmp on the development machine when this was written.

`prepare()` runs when the package is imported, before Feast is: it points both variables at
`$TMPDIR/flywheel-features-metrics-<pid>`, removes it when this process exits, and at start removes the
directories of processes that no longer exist, so a killed server's files last until the next start.
Worker processes inherit the variables and write into their parent's directory. A directory the operator
names in PROMETHEUS_MULTIPROC_DIR is used as it is and never removed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "flywheel-features-metrics-"
_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")  # prometheus_client's, Feast's


def prepare() -> Path:
    """Set both variables (before prometheus_client or Feast is imported); returns the directory."""
    given = next((os.environ[name] for name in _VARIABLES if os.environ.get(name)), None)
    if given:  # the operator's, or this process is a worker of a server that prepared it
        for name in _VARIABLES:
            os.environ.setdefault(name, given)
        return Path(given)
    base = Path(tempfile.gettempdir())
    remove_orphans(base)
    path = base / f"{PREFIX}{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)  # a directory of an earlier process with the same pid
    path.mkdir(mode=0o700)
    for name in _VARIABLES:
        os.environ[name] = str(path)
    atexit.register(_remove, path, os.getpid())
    return path


def remove_orphans(base: Path) -> list[Path]:
    """Remove `base`'s metrics directories whose process has exited; returns them."""
    removed = []
    for path in base.glob(f"{PREFIX}*"):
        pid = path.name.removeprefix(PREFIX)
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # not in a forked child that inherited the atexit hook
        shutil.rmtree(path, ignore_errors=True)
