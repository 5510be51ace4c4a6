"""The import contracts in pyproject.toml hold (no other service, layers, framework-free core)."""

import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_import_layers_hold_and_pure_modules_import_no_server_client_or_runtime():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency: uv sync"
    result = subprocess.run(
        [lint, "--no-cache"],
        check=False,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
