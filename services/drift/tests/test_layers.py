import shutil
import subprocess
from pathlib import Path


def test_import_contracts_hold():
    """Domain modules import no framework, store or alibi-detect; only _mmd imports alibi-detect."""
    lint = shutil.which("lint-imports") or str(Path(__file__).parents[1] / ".venv" / "bin" / "lint-imports")
    done = subprocess.run([lint], cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
