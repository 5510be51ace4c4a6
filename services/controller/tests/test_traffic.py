"""Moving traffic through the router's admin API: read, compare, write with the generation read, retry on 409.

The router is a separate uv project (services/router) whose package cannot be imported into this
environment, so its admin API is played here by `FakeRouterAdmin`: a MockTransport handler that follows
services/router/src/flywheel_router/_admin.py and _store_file.py line for line where it matters (bearer
token, `{"error": ...}` bodies, 404 for no route, the same Route validation and 400 wording, the generation
check with 409, generation + 1 and updatedAt on store, 201 on create).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from flywheel_contracts import Route
from flywheel_controller._ports import TrafficError
from flywheel_controller._traffic import NopTraffic, RouterAdminTraffic
from flywheel_controller._types import DesiredRoute

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"
URL = "http://router.test:8001"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeRouterAdmin:
    """The router's admin port, as far as routes go (see the module docstring)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.routes: dict[str, Route] = {}
        self.requests: list[httpx.Request] = []
        self.before_put: Callable[[str], None] | None = None  # another writer acting between our read and write

    @property
    def puts(self) -> int:
        return sum(1 for r in self.requests if r.method == "PUT")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or credential.strip() != self.token:
            return _error(401, "send Authorization: Bearer <token> (the router's admin token Secret)")
        parts = request.url.path.strip("/").split("/")
        if len(parts) != 3 or parts[:2] != ["v1", "routes"]:
            return _error(404, f"no admin route {request.url.path}")
        model = parts[2]
        if request.method == "GET":
            route = self.routes.get(model)
            if route is None:
                return _error(404, f"no route for model '{model}': PUT one to /v1/routes/{model}")
            return httpx.Response(200, json=route.to_json())
        if self.before_put is not None:
            self.before_put(model)
        return self.put(model, request.content)

    def put(self, model: str, body: bytes) -> httpx.Response:
        document = {**json.loads(body), "model": model}
        document.pop("updatedAt", None)
        try:
            route = Route.model_validate(document)
        except ValidationError as e:
            problems = "; ".join(
                f"'{'.'.join(str(p) for p in err['loc']) or 'route'}': {err['msg'].removeprefix('Value error, ')}"
                for err in e.errors()
            )
            return _error(400, f"invalid route: {problems}")
        stored = self.routes.get(model)
        current = stored.generation if stored else 0
        if route.generation != current:
            return _error(409, f"route '{model}' is at generation {current}, the write was based on {route.generation}: "
                               "read it again and re-apply the change")
        new = route.model_copy(update={"generation": current + 1, "updated_at": datetime.now(timezone.utc)})
        self.routes[model] = new
        return httpx.Response(201 if new.generation == 1 else 200, json=new.to_json())

    def bump(self, model: str, weight: float) -> None:
        """Another writer (a person with the token) changes the route."""
        current = self.routes[model]
        self.put(model, json.dumps({**current.to_json(), "candidateWeight": weight}).encode())


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message})


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "router-token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def router() -> FakeRouterAdmin:
    return FakeRouterAdmin()


@pytest.fixture
def admin(router: FakeRouterAdmin, token_file: Path) -> RouterAdminTraffic:
    return RouterAdminTraffic(URL, token_file, transport=httpx.MockTransport(router), conflict_delay=0.001)


@pytest.fixture(params=["admin-api", "nop"])
def traffic(request, admin: RouterAdminTraffic):
    """Both implementations: NopTraffic must mean the same as the router it stands in for."""
    return admin if request.param == "admin-api" else NopTraffic()


CANARY = DesiredRoute(
    stable_version="v1",
    candidate_version="v2",
    candidate_endpoint="http://fraud-v2.models:8090/",
    candidate_weight=12.5,
    sticky_header="x-card-id",
)


async def test_a_new_route_is_created_at_generation_1_with_every_field(traffic) -> None:
    stored = await traffic.set_route("fraud", CANARY)
    assert stored.generation == 1 and stored.updated_at is not None
    assert stored.to_json() | {"updatedAt": None} == {
        "schemaVersion": 1,
        "model": "fraud",
        "generation": 1,
        "stable": {"version": "v1"},
        "candidate": {"version": "v2", "endpoint": "http://fraud-v2.models:8090"},
        "candidateWeight": 12.5,
        "stickiness": {"header": "x-card-id"},
        "shadowPercent": 0.0,
        "updatedAt": None,
    }
    assert await traffic.get_route("fraud") == stored


async def test_an_unchanged_route_is_read_and_not_written_again(traffic) -> None:
    first = await traffic.set_route("fraud", CANARY)
    again = await traffic.set_route("fraud", CANARY)
    assert again == first and again.generation == 1


async def test_an_unchanged_route_costs_one_get_and_no_put(router, admin) -> None:
    await admin.set_route("fraud", CANARY)
    router.requests.clear()
    await admin.set_route("fraud", CANARY)
    assert [r.method for r in router.requests] == ["GET"]


async def test_a_change_is_written_with_the_generation_read(traffic) -> None:
    await traffic.set_route("fraud", CANARY)
    moved = await traffic.set_route("fraud", DesiredRoute(stable_version="v1", candidate_version="v2", candidate_weight=50))
    assert moved.generation == 2 and moved.candidate_weight == 50 and moved.stickiness is None
    back = await traffic.set_route("fraud", DesiredRoute(stable_version="v1"))
    assert back.generation == 3 and back.candidate is None and back.versions() == ("v1",)


async def test_blue_green_preview_and_shadow_fields_reach_the_router(router, admin) -> None:
    await admin.set_route("fraud", DesiredRoute(stable_version="v1", candidate_version="v2",
                                                preview_header="x-flywheel-preview", sticky_cookie="session"))
    await admin.set_route("shadowed", DesiredRoute(stable_version="v1", candidate_version="v2", shadow_percent=25))
    assert router.routes["fraud"].preview_header == "x-flywheel-preview"
    assert router.routes["fraud"].stickiness.cookie == "session"
    assert router.routes["shadowed"].shadow_percent == 25 and router.routes["shadowed"].candidate_weight == 0


async def test_a_write_that_raced_another_writer_is_decided_again_from_a_fresh_read(router, admin) -> None:
    await admin.set_route("fraud", CANARY)
    raced = []

    def someone_else_writes_first(model: str) -> None:
        if not raced:
            raced.append(model)
            router.bump(model, 99)

    router.before_put = someone_else_writes_first
    stored = await admin.set_route("fraud", DesiredRoute(stable_version="v1", candidate_version="v2", candidate_weight=25))
    assert stored.generation == 3 and stored.candidate_weight == 25
    assert [r.method for r in router.requests[-4:]] == ["GET", "PUT", "GET", "PUT"]


async def test_a_route_that_keeps_changing_is_given_up_after_three_tries(router, admin) -> None:
    await admin.set_route("fraud", CANARY)
    router.before_put = lambda model: router.bump(model, 99)
    with pytest.raises(TrafficError, match=r"kept changing.*3 writes were refused as stale \(409"):
        await admin.set_route("fraud", DesiredRoute(stable_version="v1", candidate_version="v2", candidate_weight=25))
    assert router.puts == 1 + 3


@pytest.mark.parametrize(
    ("desired", "named"),
    [
        (DesiredRoute(stable_version="v1", candidate_weight=10), "'route': candidateWeight needs a candidate"),
        (DesiredRoute(stable_version="v1", shadow_percent=100), "shadowPercent needs a candidate"),
        (DesiredRoute(stable_version="v1", candidate_version="v1", candidate_weight=10), "must differ"),
        (DesiredRoute(stable_version="v1", candidate_version="v2", candidate_weight=12.345), "'candidateWeight'"),
        (DesiredRoute(stable_version="v1", candidate_version="v2", preview_header="x preview"), "'previewHeader'"),
        (DesiredRoute(stable_version="v1", candidate_version="v2", sticky_header="a", sticky_cookie="b"),
         "exactly one of header or cookie"),
        (DesiredRoute(stable_version="v1", candidate_version="v2", candidate_endpoint="fraud-v2:8090"),
         "'candidate.endpoint'"),
    ],
)
async def test_a_route_the_router_would_refuse_fails_before_any_request(router, traffic, desired, named) -> None:
    with pytest.raises(TrafficError, match="would refuse the route for model 'fraud'") as refused:
        await traffic.set_route("fraud", desired)
    assert named in str(refused.value)
    assert router.requests == []


async def test_a_400_from_the_router_is_passed_on_with_the_routers_message(router, token_file) -> None:
    def stricter_router(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return _error(400, "invalid route: 'candidate.endpoint': this router only forwards to *.models")
        return router(request)

    admin = RouterAdminTraffic(URL, token_file, transport=httpx.MockTransport(stricter_router))
    with pytest.raises(TrafficError, match=r"refused the route for model 'fraud': invalid route: 'candidate.endpoint'"):
        await admin.set_route("fraud", CANARY)


async def test_get_route_is_none_when_the_router_has_none(traffic) -> None:
    assert await traffic.get_route("fraud") is None


async def test_a_refused_token_names_the_setting_to_fix(router, admin) -> None:
    router.token = "rotated-on-the-router-only"
    with pytest.raises(TrafficError) as refused:
        await admin.get_route("fraud")
    assert "refused the controller's token (FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE)" in str(refused.value)
    assert "Bearer" in str(refused.value)


async def test_the_token_file_is_read_again_for_every_request(router, admin, token_file) -> None:
    await admin.set_route("fraud", CANARY)
    router.token = "rotated"
    token_file.write_text("rotated")
    assert (await admin.get_route("fraud")).generation == 1
    assert router.requests[-1].headers["authorization"] == "Bearer rotated"


async def test_no_token_file_configured_fails_at_first_use_saying_so(router) -> None:
    admin = RouterAdminTraffic(URL, None, transport=httpx.MockTransport(router))
    with pytest.raises(TrafficError, match=r"no router admin token file is configured \(FLYWHEEL_CONTROLLER_ROUTER_TOKEN_FILE\)"):
        await admin.get_route("fraud")
    assert router.requests == []


async def test_an_unreadable_or_empty_token_file_is_named(router, tmp_path) -> None:
    missing = RouterAdminTraffic(URL, tmp_path / "absent", transport=httpx.MockTransport(router))
    with pytest.raises(TrafficError, match=r"cannot read the router token file .*absent"):
        await missing.get_route("fraud")
    (tmp_path / "empty").write_text("\n")
    empty = RouterAdminTraffic(URL, tmp_path / "empty", transport=httpx.MockTransport(router))
    with pytest.raises(TrafficError, match="is empty"):
        await empty.get_route("fraud")


async def test_an_unreachable_router_is_named_with_the_cause(token_file) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    admin = RouterAdminTraffic(URL, token_file, transport=httpx.MockTransport(refused))
    with pytest.raises(TrafficError) as down:
        await admin.set_route("fraud", CANARY)
    assert str(down.value) == f"cannot reach the router at {URL}: ConnectError: [Errno 111] Connection refused"


async def test_a_timeout_and_a_server_error_say_what_happened(router, token_file) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("", request=request)

    with pytest.raises(TrafficError, match=r"cannot reach the router at http://router.test:8001: ReadTimeout$"):
        await RouterAdminTraffic(URL, token_file, transport=httpx.MockTransport(slow)).get_route("fraud")
    broken = httpx.MockTransport(lambda r: _error(503, "the route file cannot be written: disk full"))
    with pytest.raises(TrafficError, match=r"answered 503 to GET http://router.test:8001/v1/routes/fraud: .*disk full"):
        await RouterAdminTraffic(URL, token_file, transport=broken).get_route("fraud")


async def test_an_answer_that_is_not_a_route_is_an_error_not_a_crash(token_file) -> None:
    odd = httpx.MockTransport(lambda r: httpx.Response(200, json={"routes": []}))
    with pytest.raises(TrafficError, match="not a route for model 'fraud'"):
        await RouterAdminTraffic(URL, token_file, transport=odd).get_route("fraud")


def test_a_url_that_is_not_http_is_refused_at_construction(token_file) -> None:
    with pytest.raises(ValueError, match="expected http"):
        RouterAdminTraffic("router:8001", token_file)


async def test_nop_traffic_counts_writes_and_keeps_generations() -> None:
    nop = NopTraffic()
    await nop.set_route("fraud", CANARY)
    await nop.set_route("fraud", CANARY)
    await nop.set_route("fraud", DesiredRoute(stable_version="v2"))
    assert nop.writes == 2 and nop.routes["fraud"].generation == 2 and nop.routes["fraud"].candidate is None
