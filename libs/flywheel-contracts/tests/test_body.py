"""flywheel_contracts.body: a body under its limit arrives whole; over it, the service's 413 is raised as soon as
it is known (declared, or in whichever message passes it); a client that leaves mid-body is said so."""

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flywheel_contracts import body


class TooLarge(Exception):
    pass


def feed(chunks: list[bytes], then_disconnect: bool = False):
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1 or then_disconnect}
                for i, c in enumerate(chunks)]
    if then_disconnect:
        messages.append({"type": "http.disconnect"})
    taken = []

    async def receive():
        taken.append(1)
        return messages[len(taken) - 1]

    return receive, taken


def read(chunks: list[bytes], limit: int, length: bytes | None = None, then_disconnect: bool = False):
    receive, taken = feed(chunks, then_disconnect)
    return asyncio.run(body.read_body(receive, length, limit, "X_MAX_BODY_BYTES", TooLarge)), taken


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8), st.integers(0, 200))
def test_a_body_is_whole_under_the_limit_and_refused_over_it(chunks, limit):
    whole = b"".join(chunks)
    if len(whole) <= limit:
        assert read(chunks, limit)[0] == whole
    else:
        with pytest.raises(TooLarge, match="X_MAX_BODY_BYTES"):
            read(chunks, limit)


def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read():
    receive, taken = feed([b"x" * 10])
    with pytest.raises(TooLarge, match="is 11 bytes; the limit is 10"):
        asyncio.run(body.read_body(receive, b"11", 10, "X_MAX_BODY_BYTES", TooLarge))
    assert taken == []


def test_one_message_over_the_limit_is_refused_too():
    with pytest.raises(TooLarge, match="exceeds 4 bytes"):
        read([b"12345"], 4)


def test_a_client_that_leaves_mid_body_is_disconnected_not_a_short_body():
    with pytest.raises(body.Disconnected):
        read([b"{\"a\": "], 100, then_disconnect=True)


def test_replay_gives_the_body_once_then_the_real_receive():
    receive, _ = feed([b"later"])
    replayed = body.replay(b"whole", receive)

    async def two():
        return await replayed(), await replayed()

    first, second = asyncio.run(two())
    assert first == {"type": "http.request", "body": b"whole", "more_body": False}
    assert second["body"] == b"later"
