"""The one gate in front of the drift service's writing routes: each names the credential it accepts.

Writes change what the service concludes: injected rows make drift or hide it, and since the first label
for a row wins, a forged label turns the genuine chargeback into a "conflict". So the CloudEvents intake
and `POST /v1/batch` take only the drift ingest token, `POST /v1/labels` only the drift labels token
(never each other's), checked here before a byte of the body is read. Answers to writers (`accepted`,
`unmatched`, `seq`) therefore reach credential holders only; a 401 says which credential to send and
nothing about the request. Reports, health and metrics stay open: the rollout controller reads verdicts
without a token and NetworkPolicies restrict who reaches the port.

Tokens are files (`flywheel_contracts.auth.TokenFile`), re-read when they change; an unset, missing or
empty file closes its routes (401), never opens them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from flywheel_contracts.auth import Check, TokenFile, unauthorized_body, www_authenticate

from ._errors import Unauthorized, error_body

REALM = "flywheel-drift"


@dataclass(frozen=True)
class Credential:
    """A token file and the setting that names it (said in a 401, so an operator knows what to set)."""

    token: TokenFile
    setting: str


class RequireCredentials:
    """ASGI middleware: a request to a guarded path needs that path's credential; others pass through."""

    def __init__(self, app: Any, guarded: Mapping[str, Credential], on_refused: Callable[[], None]) -> None:
        self.app = app
        self.guarded = dict(guarded)
        self.on_refused = on_refused

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        credential = self.guarded.get(scope["path"]) if scope["type"] == "http" else None
        if credential is not None:
            result = credential.token.check(scope["headers"])
            if result is not Check.OK:
                self.on_refused()
                error = Unauthorized(unauthorized_body(result, credential.token, credential.setting)["error"])
                name, value = www_authenticate(REALM)
                response = JSONResponse(error_body(error), status_code=401, headers={name.decode(): value.decode()})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
