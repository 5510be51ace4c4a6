"""The drift service as the skew check sees it: which versions it monitors, their served-row samples, and where
the check's result goes.

    GET  /v1/report?model=M                       -> flywheel_contracts.drift.Report (open to the cluster)
    GET  /v1/skew/sample?model=M&version=V&limit=N -> flywheel_contracts.skew.SkewSample (skew token)
    POST /v1/skew                                  <- flywheel_contracts.skew.SkewResult, 202 (skew token)

Standard library HTTP (urllib), as the label feed's client: one short batch of calls per run, nothing to pool.
Every failure is a DriftError naming the URL and, when there was an answer, its status: a skew check that
cannot read or post is a failed run (exit 1), never a silent one. Answers are validated against the contract
types, so a drift service of another schema is refused rather than misread.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from flywheel_contracts.auth import TokenFile
from flywheel_contracts.drift import Report
from flywheel_contracts.skew import SkewResult, SkewSample

from ._errors import DriftError

TIMEOUT_S = 60.0
"""Per request: a sample of MAX_SAMPLE_ROWS rows is a few MB, well within this on any cluster network."""
_ANSWER_SHOWN = 300
"""Characters of a refusal's body quoted in the error (the service's JSON error names the field or the token)."""

_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True)
class DriftClient:
    """The drift service at `url`; `token_file` holds the skew token, `ca_file` verifies https."""

    url: str
    token_file: Path
    ca_file: Path | None = None
    timeout_s: float = TIMEOUT_S

    def versions(self, model: str) -> list[str]:
        """The versions of `model` the drift service reports on, in its order."""
        report = self._call("GET", "/v1/report", {"model": model}, answer=Report, token=False)
        return [v.version for v in report.versions if v.model == model]

    def sample(self, model: str, version: str, limit: int) -> SkewSample:
        """Up to `limit` served rows of one version."""
        return self._call("GET", "/v1/skew/sample", {"model": model, "version": version, "limit": str(limit)},
                          answer=SkewSample)

    def post(self, result: SkewResult) -> None:
        """Hand a check's result to the service (it answers 202)."""
        self._call("POST", "/v1/skew", body=result.model_dump_json().encode())

    def _call(self, method: str, path: str, query: dict[str, str] | None = None, *, body: bytes | None = None,
              answer: type[_Model] | None = None, token: bool = True) -> _Model:
        url = f"{self.url.rstrip('/')}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/json"
        if token:
            headers.update(TokenFile(self.token_file, "drift skew token").header())
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=context) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            shown = e.read()[:_ANSWER_SHOWN].decode("utf-8", "replace")
            hint = " (is FLYWHEEL_TRAINER_SKEW_TOKEN_FILE the drift service's skew token?)" if e.code in (401, 403) \
                else ""
            raise DriftError(f"{method} {url} answered {e.code}{hint}: {shown}") from e
        except (urllib.error.URLError, OSError) as e:  # refused, unresolvable, timed out, TLS
            reason = getattr(e, "reason", e)
            raise DriftError(f"{method} {url} failed: the drift service cannot be reached ({reason})") from e
        if answer is None:
            return None  # type: ignore[return-value]  # POST: the status is the answer
        try:
            return answer.model_validate_json(raw)
        except ValidationError as e:
            raise DriftError(
                f"{method} {url} answered a body that is not a {answer.__name__} "
                f"({e.error_count()} errors, first: {e.errors(include_url=False)[0]['msg']}); "
                "the drift service and the trainer disagree on the contract (flywheel_contracts)"
            ) from e
