"""flywheel_contracts.auth: the one bearer-token check every service uses."""

from __future__ import annotations

import os
import stat

from hypothesis import given
from hypothesis import strategies as st

from flywheel_contracts.auth import Check, TokenFile, bearer_credential, unauthorized_body, write_token


def test_an_unset_missing_or_empty_credential_lets_nobody_in(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for credential in (TokenFile(None), TokenFile(tmp_path / "absent"), TokenFile(empty)):
        assert credential.check({"Authorization": "Bearer "}) is Check.NOT_CONFIGURED
        assert credential.check({"Authorization": "Bearer anything"}) is Check.NOT_CONFIGURED
        assert credential.header() == {}


def test_the_right_token_passes_and_others_are_told_apart(tmp_path):
    credential = TokenFile(write_token(tmp_path / "t"), name="drift ingest token")
    token = credential.current().decode()
    assert credential.check({"authorization": f"Bearer {token}"}) is Check.OK
    assert credential.check([(b"authorization", f"bearer  {token} ".encode())]) is Check.OK
    assert credential.check({}) is Check.MISSING
    assert credential.check({"Authorization": f"Basic {token}"}) is Check.MISSING
    assert credential.check({"Authorization": "Bearer nope"}) is Check.WRONG
    assert credential.header() == {"Authorization": f"Bearer {token}"}


def test_a_rotated_file_takes_effect_without_a_restart(tmp_path):
    path = tmp_path / "t"
    path.write_text("first\n")
    credential = TokenFile(path)
    assert credential.check({"Authorization": "Bearer first"}) is Check.OK
    replacement = tmp_path / "t.new"
    replacement.write_text("second\n")
    os.replace(replacement, path)  # how a Secret volume swaps its files
    assert credential.check({"Authorization": "Bearer first"}) is Check.WRONG
    assert credential.check({"Authorization": "Bearer second"}) is Check.OK
    path.unlink()
    assert credential.check({"Authorization": "Bearer second"}) is Check.NOT_CONFIGURED


def test_write_token_keeps_an_existing_token_and_writes_new_ones_private(tmp_path):
    path = write_token(tmp_path / "dir" / "t")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert len(first.strip()) >= 40
    assert write_token(path).read_text() == first


def test_answers_name_the_credential_and_never_the_token(tmp_path):
    credential = TokenFile(write_token(tmp_path / "t"), name="labels token")
    token = credential.current().decode()
    for result in Check:
        body = unauthorized_body(result, credential, "FLYWHEEL_DRIFT_LABELS_TOKEN_FILE")
        assert token not in str(body) and body["code"] == "unauthorized"
    assert "FLYWHEEL_DRIFT_LABELS_TOKEN_FILE" in unauthorized_body(Check.NOT_CONFIGURED, credential, "FLYWHEEL_DRIFT_LABELS_TOKEN_FILE")["error"]


@given(st.binary(max_size=64))
def test_any_header_value_is_parsed_without_error(value):
    credential = bearer_credential([(b"authorization", value)])
    assert credential is None or (credential and value.lower().lstrip().startswith(b"bearer"))
