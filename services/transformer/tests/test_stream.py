"""The feature stream client: scored transactions reach the features service's stream step, off the request path."""

import asyncio
import json
from datetime import datetime, timezone

import httpx
from prometheus_client import CollectorRegistry

from flywheel_contracts.auth import TokenFile, write_token
from flywheel_transformer._config import Settings
from flywheel_transformer._server import build_stream
from flywheel_transformer._stream import PATH, FeatureStream, StreamMetrics
from flywheel_transformer._validation import Transaction

from conftest import run


def txn(i: int, card: str = "c000001") -> Transaction:
    return Transaction(f"t{i:010d}", card, "m00001", 12.5, "USD", "US", "grocery", "pos",
                       datetime(2026, 11, 23, 12, 0, i, tzinfo=timezone.utc))


def value(registry, name):
    return registry.get_sample_value(name, {"model": "fraud"}) or 0.0


def stream_with(handler, queue_size=10, token=None, linger_s=0.0):
    registry = CollectorRegistry()
    stream = FeatureStream("http://features:6566/", StreamMetrics(registry), "fraud", queue_size, 0.5,
                           linger_s=linger_s, token=token, transport=httpx.MockTransport(handler))
    return stream, registry


def test_scored_transactions_are_posted_in_order_with_the_write_token(tmp_path):
    seen = []

    def handler(request):
        seen.append((request.url.path, request.headers.get("authorization"), json.loads(request.content)))
        return httpx.Response(200, json={"accepted": 2})

    token = write_token(tmp_path / "features-write")

    async def go():
        stream, registry = stream_with(handler, token=TokenFile(token))
        assert stream.submit([txn(1), txn(2)]) == 0
        await stream.drain()
        await stream.close(1.0)
        return registry

    registry = run(go())
    posted = [t for _, _, body in seen for t in body["transactions"]]
    assert [t["transaction_id"] for t in posted] == ["t0000000001", "t0000000002"]
    assert posted[0] == {"transaction_id": "t0000000001", "card_id": "c000001", "merchant_id": "m00001",
                         "amount": 12.5, "country": "US", "event_timestamp": "2026-11-23T12:00:01+00:00"}
    assert {path for path, _, _ in seen} == {PATH}
    assert {auth for _, auth, _ in seen} == {f"Bearer {token.read_text().strip()}"}
    assert value(registry, "flywheel_transformer_feature_stream_sent_total") == 2


def test_transactions_scored_within_the_linger_share_one_post_in_order():
    posts = []

    def handler(request):
        posts.append([t["transaction_id"] for t in json.loads(request.content)["transactions"]])
        return httpx.Response(200, json={"accepted": len(posts[-1])})

    async def go(linger_s):
        posts.clear()
        stream, registry = stream_with(handler, linger_s=linger_s)
        for i in range(4):  # one request's transaction at a time, 10 ms apart
            stream.submit([txn(i)])
            await asyncio.sleep(0.01)
        await stream.drain()
        await stream.close(1.0)
        return value(registry, "flywheel_transformer_feature_stream_sent_total")

    assert run(go(1.0)) == 4 and posts == [[f"t{i:010d}" for i in range(4)]]
    assert run(go(0.0)) == 4 and len(posts) == 4  # no linger: each goes as soon as the sender is free


def test_a_full_queue_drops_and_counts_without_waiting():
    release = asyncio.Event()

    async def handler(request):
        await release.wait()
        return httpx.Response(200)

    async def go():
        stream, registry = stream_with(handler, queue_size=2)
        stream.submit([txn(1)])
        await asyncio.sleep(0.05)  # the sender holds the first one in its post
        dropped = stream.submit([txn(2), txn(3), txn(4)])
        release.set()
        await stream.drain()
        await stream.close(1.0)
        return dropped, registry

    dropped, registry = run(go())
    assert dropped == 1
    assert value(registry, "flywheel_transformer_feature_stream_dropped_total") == 1
    assert value(registry, "flywheel_transformer_feature_stream_sent_total") == 3


def test_a_refused_or_unreachable_stream_step_is_counted_not_raised():
    def refuse(request):
        return httpx.Response(401, json={"error": "send the token", "code": "unauthorized"})

    def unreachable(request):
        raise httpx.ConnectError("refused")

    for handler in (refuse, unreachable):
        async def go(handler=handler):
            stream, registry = stream_with(handler)
            stream.submit([txn(1), txn(2)])
            await stream.drain()
            await stream.close(1.0)
            return registry

        registry = run(go())
        assert value(registry, "flywheel_transformer_feature_stream_failed_total") == 2


def test_what_is_queued_at_the_shutdown_deadline_is_counted_unsent():
    async def handler(request):
        await asyncio.sleep(10)
        return httpx.Response(200)

    async def go():
        stream, registry = stream_with(handler)
        stream.submit([txn(1)])
        await asyncio.sleep(0.05)
        stream.submit([txn(2)])
        unsent = await stream.close(0.1)
        return unsent, registry

    unsent, registry = run(go())
    assert unsent == 2
    assert value(registry, "flywheel_transformer_feature_stream_unsent_total") == 2


def test_the_stream_is_off_unless_its_url_is_set(tmp_path):
    assert build_stream(Settings(), CollectorRegistry()) is None
    on = build_stream(Settings(feature_stream_url="http://127.0.0.1:6566"), CollectorRegistry())
    assert on is not None and on.url == "http://127.0.0.1:6566/stream/transactions"
    run(on.close(0.1))
