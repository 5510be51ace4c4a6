"""One wording for bad settings across every service: `flywheel_contracts.settings`, re-exported here for
the services that import it from flywheel-core."""

from __future__ import annotations

from flywheel_contracts.settings import describe_setting_errors

__all__ = ["describe_setting_errors"]
