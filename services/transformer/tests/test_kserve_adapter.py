"""KServe's private names this service uses (all in _kserve_adapter): a KServe upgrade that renames or drops
one fails here, naming it, before it fails a deployment."""

import re
from pathlib import Path

import pytest
from kserve import ModelServer

from flywheel_transformer import _kserve_adapter
from flywheel_transformer._kserve_adapter import PRIVATE_NAMES, check_private_names, missing_private_names


@pytest.mark.parametrize(
    ("cls", "name"), [(cls, name) for cls, names in PRIVATE_NAMES.items() for name in names], ids=str
)
def test_kserve_still_has_each_private_name_this_service_uses(cls, name):
    assert callable(getattr(cls, name, None)), (
        f"KServe no longer has {cls.__qualname__}.{name}: review _kserve_adapter.py before upgrading KServe"
    )


def test_nothing_is_missing_so_the_server_may_start():
    assert missing_private_names() == []
    check_private_names()


def test_a_private_name_kserve_dropped_stops_the_server_naming_it(monkeypatch):
    monkeypatch.delattr(ModelServer, "_serve")
    with pytest.raises(RuntimeError, match=r"kserve\.model_server\.ModelServer\._serve no longer exist"):
        check_private_names()


def test_no_other_module_uses_a_kserve_private_name():
    """The adapter is the only place: another module reaching into KServe would escape the check above."""
    package = Path(_kserve_adapter.__file__).parent
    names = {name for names in PRIVATE_NAMES.values() for name in names} | {"_rest_server"}
    uses = re.compile(r"(\.|def )(" + "|".join(sorted(names)) + r")\b")
    offenders = [
        f"{path.name}: {match.group(2)}"
        for path in sorted(package.glob("*.py"))
        if path.name != "_kserve_adapter.py"
        for match in uses.finditer(path.read_text())
    ]
    assert offenders == []
