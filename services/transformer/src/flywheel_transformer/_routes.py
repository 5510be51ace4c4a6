"""The routes this server answers: flywheel_core.served_routes (shared with the predictor)."""

from flywheel_core.served_routes import SERVED_ROUTES, ServedRoutesOnly

__all__ = ["SERVED_ROUTES", "ServedRoutesOnly"]
