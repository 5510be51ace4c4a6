"""Every service Dockerfile passes BuildKit's Dockerfile checks (the rules of `docker build --check`, run by
hack/cluster's dockerfile-lint without a daemon) and the project's own image rules: multi-stage, non-root,
lock file before source (so code changes reuse the dependency layer), frozen installs, pinned base images,
and nothing it copies hidden by .dockerignore. Images are not built here (no container engine)."""

from __future__ import annotations

import re
import subprocess

import pytest

from chart_fixtures import tool
from conftest import REPO

DOCKERFILES = sorted(REPO.glob("services/*/Dockerfile"))
IDS = [p.parent.name for p in DOCKERFILES]


def _instructions(path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions(path):
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


@pytest.fixture(scope="module")
def lint(cluster):
    binary = tool(cluster, "dockerfile-lint")

    def run(*paths) -> subprocess.CompletedProcess:
        return subprocess.run([binary, *map(str, paths)], capture_output=True, text=True, timeout=60)

    return run


def test_every_dockerfile_passes_the_buildkit_checks(lint):
    done = lint(*DOCKERFILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_checks_catch_a_bad_dockerfile(lint, tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11 as Build\nMAINTAINER someone\nENV API_SECRET=x\nWORKDIR app\nCMD python -m x\n")
    done = lint(bad)
    assert done.returncode == 1
    for rule in ("StageNameCasing", "MaintainerDeprecated", "SecretsUsedInArgOrEnv", "WorkdirRelativePath",
                 "JSONArgsRecommended", "FromAsCasing"):
        assert f": {rule}: " in done.stdout, done.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_image_is_multi_stage_and_runs_as_a_numeric_non_root_user(path):
    stages = _stages(path)
    assert len(stages) >= 2, "build tools stay in a build stage"
    users = [args for word, args in stages[-1] if word == "USER"]
    assert users and users[-1].isdigit() and int(users[-1]) != 0, \
        "the final stage ends as a numeric non-root user (runAsNonRoot can verify a number only)"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_lock_file_is_copied_and_installed_frozen_before_the_source(path):
    build = _stages(path)[0]
    copies = [i for i, (word, args) in enumerate(build) if word == "COPY" and "--from" not in args]
    lock = next(i for i in copies if "uv.lock" in build[i][1])
    source = next(i for i in copies if "/src" in build[i][1])
    assert lock < source
    syncs = [i for i, (word, args) in enumerate(build) if word == "RUN" and "uv sync" in args]
    assert any(lock < i < source for i in syncs), "dependencies install between the lock file and the source"
    assert all("--frozen" in build[i][1] for i in syncs), "installs never re-resolve the lock file"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_base_images_are_pinned(path):
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", path.read_text(), flags=re.M))
    refs = [a.split()[0] for w, a in _instructions(path) if w == "FROM"]
    refs += re.findall(r"--from=(\S+)", path.read_text())
    stage_names = set(re.findall(r"^FROM \S+ AS (\w+)", path.read_text(), flags=re.M))
    for ref in refs:
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
        if ref in stage_names:
            continue
        tag = ref.rsplit(":", 1)[1] if ":" in ref.split("/")[-1] else ""
        assert re.match(r"^v?\d+(\.\d+)+", tag), f"{ref}: pin a version tag (not latest, not untagged)"


def _ignored(patterns: list[str], path: str) -> bool:
    def regex(pattern: str) -> str:
        out = re.escape(pattern.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        return f"^{out}(/.*)?$"
    ignored = False
    for p in patterns:  # later lines win, `!` re-includes, as Docker reads them
        negate = p.startswith("!")
        if re.match(regex(p.lstrip("!")), path):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_nothing_the_dockerfile_copies_is_excluded_from_the_build_context(path):
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for word, args in _instructions(path):
        if word == "COPY" and "--from" not in args:
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert not _ignored(patterns, source), f"{source} is excluded by .dockerignore"
    assert _ignored(patterns, "libs/flywheel-core/.venv") and _ignored(patterns, "data/transactions.parquet")
