"""A route: how the router splits one model's traffic between a stable and a candidate version.

Written by whoever moves traffic (the rollout controller, a person with the router's admin token) through
the router's admin API (`PUT /v1/routes/{model}`), stored by the router's route source (a file locally, a
ConfigMap in a cluster), read by every router replica. Its JSON form is the model's own (camelCase, as
the ModelRollout CRD spells the same ideas):

```json
{"schemaVersion": 1, "model": "fraud", "generation": 4,
 "stable": {"version": "v1"}, "candidate": {"version": "v2", "endpoint": "http://fraud-v2:8090"},
 "candidateWeight": 12.5, "previewHeader": "x-flywheel-preview",
 "stickiness": {"header": "x-card-id"}, "shadowPercent": 0, "updatedAt": "2026-11-30T21:00:00Z"}
```

`generation` is the optimistic-concurrency token: a writer sends the generation it read (0 to create) and
the router refuses a stale one (409); every accepted write stores generation + 1.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION: Final = 1
"""The route JSON's version; a reader refuses a route with a version it does not know."""

WEIGHT_RESOLUTION = 100
"""Steps per percent: weights and shadow shares are exact to 0.01% (basis points of a percent)."""

MODEL_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
VERSION_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"
HEADER_PATTERN = r"^[A-Za-z0-9-]+$"
COOKIE_PATTERN = r"^[A-Za-z0-9_-]+$"
_ENDPOINT_RE = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")

_STRICT = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Backend(BaseModel):
    """One model version and where it is served."""

    model_config = _STRICT

    version: str = Field(pattern=VERSION_PATTERN, max_length=63, description="A published version, e.g. v2.")
    endpoint: str | None = Field(
        None,
        max_length=2048,
        description="Base URL (http[s]://host[:port][/prefix]) of the transformer serving this version; "
        "None: the router's default upstream, told the version in the x-flywheel-model-version header.",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _ENDPOINT_RE.match(value):
            raise ValueError("expected a base URL such as http://host:8090, without query or fragment")
        return value.rstrip("/")


class Stickiness(BaseModel):
    """Keep each caller on one version by hashing this request header or cookie (exactly one)."""

    model_config = _STRICT

    header: str | None = Field(None, pattern=HEADER_PATTERN, max_length=128)
    cookie: str | None = Field(None, pattern=COOKIE_PATTERN, max_length=128)

    @model_validator(mode="after")
    def _exactly_one(self) -> Stickiness:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("stickiness sets exactly one of header or cookie")
        return self


def _percent(value: float, name: str) -> float:
    steps = value * WEIGHT_RESOLUTION
    if abs(steps - round(steps)) > 1e-6:
        raise ValueError(f"{name} has a resolution of 0.01 (percent); got {value}")
    return round(steps) / WEIGHT_RESOLUTION


class Route(BaseModel):
    """The traffic split of one model. Immutable: a change is a new Route, applied atomically."""

    model_config = _STRICT

    schema_version: Literal[1] = Field(SCHEMA_VERSION, alias="schemaVersion")
    model: str = Field(pattern=MODEL_PATTERN, max_length=63)
    generation: int = Field(
        0, ge=0, description="Writers send the generation they read (0 to create); stored routes carry theirs."
    )
    stable: Backend
    candidate: Backend | None = None
    candidate_weight: float = Field(
        0.0, ge=0, le=100, alias="candidateWeight", description="Percent of requests sent to the candidate."
    )
    preview_header: str | None = Field(
        None,
        alias="previewHeader",
        pattern=HEADER_PATTERN,
        max_length=128,
        description="Blue-green preview: a request carrying this header (any non-empty value) goes to the candidate.",
    )
    stickiness: Stickiness | None = None
    shadow_percent: float = Field(
        0.0,
        ge=0,
        le=100,
        alias="shadowPercent",
        description="Percent of the requests the stable answers that are also sent to the candidate, off the "
        "response path, to compare answers; callers only ever see the stable's answer.",
    )
    updated_at: datetime | None = Field(None, alias="updatedAt", description="Set by the router when stored.")

    @field_validator("candidate_weight")
    @classmethod
    def _weight_resolution(cls, value: float) -> float:
        return _percent(value, "candidateWeight")

    @field_validator("shadow_percent")
    @classmethod
    def _shadow_resolution(cls, value: float) -> float:
        return _percent(value, "shadowPercent")

    @model_validator(mode="after")
    def _candidate_rules(self) -> Route:
        if self.candidate is None:
            for name, used in (
                ("candidateWeight", self.candidate_weight > 0),
                ("shadowPercent", self.shadow_percent > 0),
                ("previewHeader", self.preview_header is not None),
            ):
                if used:
                    raise ValueError(f"{name} needs a candidate")
        elif self.candidate.version == self.stable.version:
            raise ValueError("candidate.version must differ from stable.version")
        return self

    @property
    def weight_steps(self) -> int:
        """candidateWeight in steps of 0.01% (0..10000)."""
        return round(self.candidate_weight * WEIGHT_RESOLUTION)

    @property
    def shadow_steps(self) -> int:
        """shadowPercent in steps of 0.01% (0..10000)."""
        return round(self.shadow_percent * WEIGHT_RESOLUTION)

    def versions(self) -> tuple[str, ...]:
        """The versions this route sends traffic to, stable first."""
        return (self.stable.version,) if self.candidate is None else (self.stable.version, self.candidate.version)

    def to_json(self) -> dict:
        """The JSON form (camelCase, unset optional blocks left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
