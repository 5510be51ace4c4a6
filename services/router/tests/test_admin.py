"""The admin API: bearer token on everything, routes with optimistic concurrency, stats, clear 4xx."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flywheel_router import AdminApp, TokenFile
from flywheel_router._store_file import FileRouteSource

from conftest import client, eventually, route

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def admin(make_app, tmp_path: Path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    inference = make_app()
    source = FileRouteSource(tmp_path / "routes.json", 0.05)
    return AdminApp(TokenFile(token), source, inference)


async def follow(admin: AdminApp) -> asyncio.Task:
    """The source applying its routes to the inference app, as the router runs it; returns once it has loaded."""
    loads: list[int] = []

    def apply(routes) -> None:
        admin.inference.apply(routes)
        loads.append(len(routes))

    task = asyncio.create_task(admin.source.run(apply))
    await eventually(lambda: loads, "the route source never loaded")
    return task


def generation_in_force(admin: AdminApp, model: str) -> int | None:
    compiled = admin.inference.table.get(model)
    return None if compiled is None else compiled.route.generation


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}, {"authorization": f"Basic {TOKEN}"}]
)
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/routes"), ("PUT", "/v1/routes/fraud"), ("GET", "/v1/stats/fraud")]
)
async def test_nothing_answers_without_the_token(admin, headers, method, path) -> None:
    async with client(admin) as c:
        r = await c.request(method, path, headers=headers, json={"stable": {"version": "v9"}})
    assert r.status_code == 401 and "Bearer" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert admin.inference.table.get("fraud") is None


async def test_without_a_configured_token_the_admin_api_is_closed(make_app, tmp_path) -> None:
    admin = AdminApp(TokenFile(None), FileRouteSource(tmp_path / "r.json", 0.05), make_app())
    async with client(admin) as c:
        r = await c.get("/v1/routes", headers=AUTH)
    assert r.status_code == 401 and "FLYWHEEL_ROUTER_TOKEN_FILE" in r.json()["error"]


async def test_a_rotated_token_takes_effect_without_a_restart(admin, tmp_path) -> None:
    async with client(admin) as c:
        assert (await c.get("/v1/routes", headers=AUTH)).status_code == 200
        (tmp_path / "token").write_text("new-token")
        assert (await c.get("/v1/routes", headers=AUTH)).status_code == 401
        assert (await c.get("/v1/routes", headers={"authorization": "Bearer new-token"})).status_code == 200


async def test_put_creates_then_updates_with_the_generation_read_and_refuses_a_stale_one(admin) -> None:
    task = await follow(admin)
    async with client(admin) as c:
        created = await c.put("/v1/routes/fraud", headers=AUTH, json={"stable": {"version": "v1"}})
        assert created.status_code == 201 and created.json()["generation"] == 1 and "updatedAt" in created.json()
        canary = {"stable": {"version": "v1"}, "candidate": {"version": "v2"}, "candidateWeight": 12.5, "generation": 1}
        updated = await c.put("/v1/routes/fraud", headers=AUTH, json=canary)
        assert updated.status_code == 200 and updated.json()["generation"] == 2
        stale = await c.put("/v1/routes/fraud", headers=AUTH, json=canary)
        assert stale.status_code == 409 and "generation 2" in stale.json()["error"]
        await eventually(lambda: generation_in_force(admin, "fraud") == 2, "generation 2 never came into force")
        got = await c.get("/v1/routes/fraud", headers=AUTH)
        assert got.json()["candidateWeight"] == 12.5 and got.json()["generation"] == 2
        assert (await c.get("/v1/routes", headers=AUTH)).json()["routes"][0]["model"] == "fraud"
    assert admin.inference.table.get("fraud").route.candidate.version == "v2"
    task.cancel()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"stable": {"version": "v1"}, "candidateWeight": 10}, "candidateWeight needs a candidate"),
        ({"stable": {"version": "v1"}, "candidate": {"version": "v2"}, "candidateWeight": 101}, "'candidateWeight'"),
        ({"stable": {"version": "v1"}, "candidate": {"version": "v2"}, "candidateWeight": 1.234}, "resolution"),
        ({"stable": {}}, "'stable.version'"),
        ({}, "'stable'"),
        ({"stable": {"version": "v1"}, "weight": 5}, "'weight'"),
        ({"stable": {"version": "v1"}, "model": "other"}, "path names 'fraud'"),
        (
            {"stable": {"version": "v1"}, "candidate": {"version": "v2", "endpoint": "not a url"}},
            "'candidate.endpoint'",
        ),
        ([1, 2], "JSON object"),
    ],
)
async def test_a_wrong_route_is_a_400_naming_the_field(admin, body, named) -> None:
    async with client(admin) as c:
        r = await c.put("/v1/routes/fraud", headers=AUTH, json=body)
    assert r.status_code == 400 and named in r.json()["error"]


async def test_bad_bodies_and_methods(admin) -> None:
    async with client(admin) as c:
        not_json = await c.put(
            "/v1/routes/fraud",
            headers=AUTH,
            content=b"{",
        )
        text = await c.put("/v1/routes/fraud", headers={**AUTH, "content-type": "text/plain"}, content=b"{}")
        delete = await c.delete("/v1/routes/fraud", headers=AUTH)
        missing = await c.get("/v1/routes/none", headers=AUTH)
        unknown = await c.get("/v1/nothing", headers=AUTH)
        huge = await c.put("/v1/routes/fraud", headers=AUTH, content=b" " * 100_000)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert text.status_code == 415
    assert delete.status_code == 405 and delete.headers["allow"] == "GET, PUT"
    assert missing.status_code == 404 and unknown.status_code == 404 and huge.status_code == 413


async def test_stats_are_cumulative_with_the_replica_and_time(admin) -> None:
    admin.inference.apply({"fraud": route(candidate={"version": "v2"}, candidateWeight=50)})
    async with client(admin.inference) as c:
        for _ in range(10):
            await c.post("/v1/models/fraud:predict", content=b"{}")
    async with client(admin) as c:
        first = (await c.get("/v1/stats/fraud", headers=AUTH)).json()
        second = (await c.get("/v1/stats/fraud", headers=AUTH)).json()
        none = await c.get("/v1/stats/other", headers=AUTH)
    assert first["schemaVersion"] == 1 and first["startedAt"] == second["startedAt"]
    assert first["timestamp"] <= second["timestamp"]
    assert sum(v["requests"] for v in first["versions"].values()) == 10
    assert first["versions"]["v2"]["role"] == "candidate"
    assert none.status_code == 404


@pytest.mark.parametrize(
    "raw",
    [
        b'{"stable": {"version": "v1"}, "candidateWeight": NaN}',
        b'{"generation": Infinity}',
        b'{"stable": {"version": "v1"}, "generation": 1e400}',
    ],
)
async def test_non_finite_numbers_are_a_400(admin, raw: bytes) -> None:
    async with client(admin) as c:
        r = await c.put("/v1/routes/fraud", headers={**AUTH, "content-type": "application/json"}, content=raw)
    assert r.status_code == 400 and "error" in r.json()


async def test_a_bug_in_the_route_source_is_a_500_with_a_logged_traceback(admin, caplog, monkeypatch) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail from a bug")

    monkeypatch.setattr(admin.source, "put", broken)
    async with client(admin) as c:
        r = await c.put("/v1/routes/fraud", headers=AUTH, json={"stable": {"version": "v1"}})
    assert r.status_code == 500 and r.json()["code"] == "internal" and "secret" not in r.text
    assert [rec.exc_info[0] for rec in caplog.records if rec.exc_info] == [RuntimeError]
