"""The import layers in pyproject.toml hold: the pure core imports no framework or client."""

import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_import_layers_hold_and_the_domain_imports_no_server_or_client():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency: uv sync"
    result = subprocess.run([lint, "--no-cache"], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
