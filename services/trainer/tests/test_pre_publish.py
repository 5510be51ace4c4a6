import sys

import pytest

from flywheel_trainer._errors import PublishError
from flywheel_trainer._publish import run_pre_publish


def test_pre_publish_command_gets_the_staging_dir_and_its_files_stay(tmp_path):
    script = "import pathlib, sys; pathlib.Path(sys.argv[1], 'state.json').write_text('{}')"
    run_pre_publish(f"{sys.executable} -c \"{script}\"", tmp_path)
    assert (tmp_path / "state.json").read_text() == "{}"


def test_failing_pre_publish_command_stops_the_publish_and_says_why(tmp_path):
    script = "import sys; print('no reference rows', file=sys.stderr); sys.exit(3)"
    with pytest.raises(PublishError, match="exited 3; nothing was published") as raised:
        run_pre_publish(f"{sys.executable} -c \"{script}\"", tmp_path)
    assert "no reference rows" in str(raised.value)


def test_empty_pre_publish_command_does_nothing(tmp_path):
    run_pre_publish("  ", tmp_path)
    assert list(tmp_path.iterdir()) == []
