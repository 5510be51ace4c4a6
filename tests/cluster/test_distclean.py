"""hack/make/distclean.sh (`make distclean`): lists what it removes, removes only that, and an argument it
does not know removes nothing. Every cache it would touch is a temp dir here (HOME, GOCACHE, GOMODCACHE,
FLYWHEEL_K8S_CACHE and TMPDIR point into tmp_path), so the machine's real caches are never at stake."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "make" / "distclean.sh"


def _caches(tmp_path: Path) -> tuple[dict[str, str], list[Path]]:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    dirs = [home / ".cache" / "uv", tmp_path / "k8s", tmp_path / "gocache", tmp_path / "gomod", tmp / "flywheel-bench-1"]
    for path in dirs:
        path.mkdir(parents=True)
        (path / "file").write_text("x" * 1000)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "FLYWHEEL_K8S_CACHE": str(tmp_path / "k8s"),
        "GOCACHE": str(tmp_path / "gocache"),
        "GOMODCACHE": str(tmp_path / "gomod"),
        "GOFLAGS": "",
        "TMPDIR": str(tmp),
    }
    return env, dirs


def test_dry_run_lists_each_cache_with_its_size_and_removes_nothing(tmp_path):
    env, dirs = _caches(tmp_path)
    run = subprocess.run([str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "would remove" in run.stdout
    for path in dirs[:2]:
        assert str(path) in run.stdout
    assert all(path.exists() for path in dirs)


def test_an_unknown_argument_removes_nothing(tmp_path):
    env, dirs = _caches(tmp_path)
    for argument in ("--help", "-n", "--dry_run"):
        run = subprocess.run([str(SCRIPT), argument], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and "usage" in run.stderr
        assert all(path.exists() for path in dirs), argument


def test_without_arguments_it_empties_every_listed_cache(tmp_path):
    env, dirs = _caches(tmp_path)
    run = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "distclean: done" in run.stdout
    uv, k8s, gocache, gomod, leftover = dirs
    assert not uv.exists() and not k8s.exists() and not leftover.exists()
    assert not (gomod / "file").exists()  # go clean -modcache; `go clean -cache` keeps files that are not its entries
