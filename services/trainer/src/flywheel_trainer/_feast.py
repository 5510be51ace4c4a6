"""Feast in a batch job without its process-wide side effects: no files left open or behind, nothing at exit.

Two things Feast does to the whole process, both harmless to a server and noise to a job:

- `import feast` imports `feast.metrics`, which switches prometheus_client into multiprocess mode in a new
  `/tmp/feast_metrics_*` directory and opens files there that it never closes: ResourceWarnings at exit,
  and the directory stays behind when the job is killed. A training job exports no metrics.
- The DuckDB offline store reads through ibis's default backend, one DuckDB connection that ibis keeps in
  `ibis.options.default_backend` for the life of the process. Still open when the interpreter tears
  DuckDB down, it makes DuckDB's bindings (nanobind) print ~45 `nanobind: leaked ...` lines at exit.
"""

from __future__ import annotations

import os
import sys

_MULTIPROCESS_VARIABLES = ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR")


def keep_feast_metrics_in_memory() -> None:
    """Call before the first `import feast`: Feast's Prometheus metrics then live in memory only.

    prometheus_client picks in-memory or file-backed values once, when it is first imported, from the
    variables above; `feast.metrics` sets them (to a directory it creates) only when they are unset. So:
    import prometheus_client while they are unset, import Feast with them pointing at os.devnull (no
    directory is made, and nothing could be written there by mistake), then put the environment back so
    subprocesses see it unchanged. Someone who set either variable on purpose keeps Feast's own behaviour.
    """
    if "feast.metrics" in sys.modules or any(name in os.environ for name in _MULTIPROCESS_VARIABLES):
        return
    import prometheus_client.values  # noqa: F401  (chooses in-memory values: the variables are unset)

    try:
        os.environ["PROMETHEUS_MULTIPROCESS_DIR"] = os.devnull
        import feast.metrics  # noqa: F401
    finally:
        for name in _MULTIPROCESS_VARIABLES:
            os.environ.pop(name, None)


def close_offline_store() -> None:
    """Close the DuckDB connection Feast's offline store opened through ibis (a later query opens another)."""
    ibis = sys.modules.get("ibis")
    if ibis is None:
        return
    backend = ibis.options.default_backend
    if backend is None:
        return
    ibis.options.default_backend = None
    backend.disconnect()
