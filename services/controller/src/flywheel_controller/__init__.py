"""Flywheel's rollout controller: reconciles ModelRollouts through the router, judging the candidate against
the stable it runs beside with sequential statistics, and rolls back on evidence."""

from __future__ import annotations

__all__: list[str] = []
