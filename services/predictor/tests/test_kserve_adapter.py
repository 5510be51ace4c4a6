"""KServe's private names this service uses (all in _kserve_adapter): a KServe upgrade that renames or drops
one fails here, naming it, before it fails a deployment."""

import re
from pathlib import Path

import pytest
from kserve import ModelServer
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess

from flywheel_predictor import _kserve_adapter
from flywheel_predictor._kserve_adapter import (
    PRIVATE_ATTRIBUTES,
    PRIVATE_METHODS,
    check_private_names,
    missing_private_names,
)


@pytest.mark.parametrize(
    ("cls", "name"), [(cls, name) for cls, names in PRIVATE_METHODS.items() for name in names], ids=str
)
def test_kserve_still_has_each_private_method_this_service_uses(cls, name):
    assert callable(getattr(cls, name, None)), (
        f"KServe no longer has {cls.__qualname__}.{name}: review _kserve_adapter.py before upgrading KServe"
    )


def test_kserve_still_sets_each_private_attribute_this_service_replaces():
    server = ModelServer(enable_grpc=False)
    assert server._rest_multiprocess_server is None  # what ModelServer.stop stops when it is set
    assert "_rest_server" in RESTServerMultiProcess.__init__.__code__.co_names
    assert set(PRIVATE_ATTRIBUTES) == {ModelServer, RESTServerMultiProcess}


def test_nothing_is_missing_so_the_server_may_start():
    assert missing_private_names() == []
    check_private_names()


def test_a_private_method_kserve_dropped_stops_the_server_naming_it(monkeypatch):
    monkeypatch.delattr(ModelServer, "_serve")
    with pytest.raises(RuntimeError, match=r"kserve\.model_server\.ModelServer\._serve no longer exist"):
        check_private_names()


def test_a_private_attribute_kserve_renamed_stops_the_server_naming_it(monkeypatch):
    monkeypatch.setitem(PRIVATE_ATTRIBUTES, RESTServerMultiProcess, ("_rest_server_renamed",))
    with pytest.raises(RuntimeError, match=r"RESTServerMultiProcess\._rest_server_renamed no longer exist"):
        check_private_names()


def test_no_other_module_uses_a_kserve_private_name():
    """The adapter is the only place: another module reaching into KServe would escape the checks above."""
    package = Path(_kserve_adapter.__file__).parent
    names = {name for table in (PRIVATE_METHODS, PRIVATE_ATTRIBUTES) for names in table.values() for name in names}
    uses = re.compile(r"(\.|def )(" + "|".join(sorted(names)) + r")\b")
    offenders = [
        f"{path.name}: {match.group(2)}"
        for path in sorted(package.glob("*.py"))
        if path.name != "_kserve_adapter.py"
        for match in uses.finditer(path.read_text())
    ]
    assert offenders == []
