"""One wording for bad settings across every service.

Each service reads its typed settings (pydantic-settings) once at start-up; when a value is wrong, the
message names the environment variable, the value and what was expected:
`Config 'FLYWHEEL_PREDICTOR_WORKERS' has value '0': expected greater than or equal to 1`.
This module only formats: it takes the error's `errors()` list, so it needs no pydantic itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _expected(message: str) -> str:
    for prefix in ("Value error, ", "Input should be "):
        message = message.removeprefix(prefix)
    return message


def describe_setting_errors(errors: Iterable[Mapping[str, Any]], env_prefix: str) -> str:
    """The problems of a settings validation error (pydantic's `errors()`), one clause each."""
    problems = []
    for error in errors:
        expected = _expected(str(error.get("msg", "a valid value")))
        loc = error.get("loc") or ()
        if not loc:  # a check across several fields
            problems.append(f"Config '{env_prefix}*': {expected}")
            continue
        name = env_prefix + "_".join(str(part) for part in loc).upper()
        problems.append(f"Config '{name}' has value {error.get('input')!r}: expected {expected}")
    return "; ".join(problems)
