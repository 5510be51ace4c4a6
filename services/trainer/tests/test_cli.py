"""What a person sees and what stays behind when `python -m flywheel_trainer` runs (see conftest.cli_run)."""

import re

# asctime, level, logger: the format _cli.main configures. Anything else on the terminal is noise.
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def test_a_training_run_prints_its_log_records_and_nothing_else(cli_run):
    assert cli_run.returncode == 0, cli_run.output
    assert "leaked" not in cli_run.output  # DuckDB's nanobind dump when a connection outlives the interpreter
    assert "ResourceWarning" not in cli_run.output  # files Feast's metrics left open
    assert cli_run.output.endswith("\n")
    noise = [line for line in cli_run.output.splitlines() if not LOG_RECORD.match(line)]
    assert noise == []


def test_a_training_run_writes_nothing_under_home_or_the_temporary_directory(cli_run):
    # ONNX Runtime's telemetry cache (~/.cache/Microsoft/DeveloperTools/.onnxruntime) and Feast's metrics
    # directory (/tmp/feast_metrics_*) were both left behind by every run.
    assert sorted(p.relative_to(cli_run.home).as_posix() for p in cli_run.home.rglob("*")) == []
    # torch's compile cache is one directory per user (torchinductor_<user>, empty here), made when torch
    # loads its exporter and reused by every later run: torch's to keep or move (TORCHINDUCTOR_CACHE_DIR).
    assert [p.name for p in cli_run.tmp.iterdir() if not p.name.startswith("torchinductor_")] == []
