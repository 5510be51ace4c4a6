"""The import contracts in pyproject.toml hold: no service, flywheel_core, framework or numpy."""

import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_library_imports_no_service_core_framework_or_numpy():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency: uv sync"
    result = subprocess.run([lint, "--no-cache"], check=False, cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
