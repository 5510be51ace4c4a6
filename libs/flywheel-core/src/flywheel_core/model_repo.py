"""The model repository: immutable, digest-checked versions under `<repo>/<model>/<version>/`.

A version is published by writing everything into a staging directory, recording the sha256 of every
file in `metadata.json` (written last) and renaming the directory into place, so a reader either sees a
whole version or none. Loaders verify the digests before use: a model that is not byte-for-byte what the
trainer published is refused rather than served.

Digests alone do not stop someone who can write the model volume: they can rewrite metadata.json too.
With a signing key (the file named by FLYWHEEL_MODEL_SIGNING_KEY_FILE, a Secret in the chart) `publish`
also writes `metadata.json.sig`, an HMAC-SHA256 of metadata.json's bytes, and every loader refuses a
version whose signature is missing or wrong. The key file holds one key per line: the first signs, every
line verifies, so a key is rotated by adding the new one first, republishing or waiting, then removing the
old one. Without a key nothing is signed or checked (the local default).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

METADATA_FILE = "metadata.json"
SIGNATURE_FILE = "metadata.json.sig"
SIGNING_KEY_ENV = "FLYWHEEL_MODEL_SIGNING_KEY_FILE"
MODEL_CARD_FILE = "MODEL_CARD.md"
DRIFT_REFERENCE_FILE = "drift_reference.parquet"
DRIFT_STATE_FILE = "drift_state/state.json"
_VERSION_RE = re.compile(r"^v(\d+)$")

# The schema version of metadata.json this code writes and reads. A reader refuses any other version
# (ModelMetadataError says which); files published before the field existed are version 1. Bump it when
# a field changes meaning or a reader would misread an old file; adding an optional field does not.
SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Contract(BaseModel):
    # Fields this code does not know are kept (a newer trainer may add optional ones), never dropped.
    model_config = ConfigDict(extra="allow", frozen=True)


class Column(_Contract):
    """One column of the model input vector, in order: a numeric feature, or a hashed categorical."""

    name: str = Field(min_length=1)
    kind: Literal["numeric", "hashed"]
    buckets: int | None = Field(None, ge=1, description="hashed columns: the number of hash buckets")


class TensorSpec(_Contract):
    """The model's one input or output tensor (KServe V2 names and datatypes)."""

    name: str = Field(min_length=1)
    datatype: Literal["FP32", "FP16", "FP64", "INT64", "INT32", "BOOL", "BYTES"]
    shape: list[int] = Field(min_length=1)
    columns: list[Column] = Field(default_factory=list)


class Variant(_Contract):
    """A published ONNX variant (fp32, fp16, int8, ...): its file and whether it passed the accuracy gate."""

    file: str = Field(min_length=1)
    published: bool
    bytes: int | None = Field(None, ge=0)
    cpu_latency_us: float | None = Field(None, ge=0)


class NumericRange(_Contract):
    """The smallest and largest value of a raw numeric field in the training rows."""

    min: float = Field(allow_inf_nan=False)
    max: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> NumericRange:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class TrainingDomain(_Contract):
    """What the model saw in training, by raw transaction field (flywheel_core.schema.DOMAIN_CATEGORICALS and
    DOMAIN_NUMERICS): serving flags a request value outside it as `unseen` (still scored). Written by the
    trainer from the rows it trained on (the train split). Absent in metadata published before it existed
    (still schema_version 1): readers then make no unseen checks."""

    rows: int = Field(ge=0, description="training rows the vocabularies and ranges were taken from")
    vocabularies: dict[str, list[str]] = Field(
        default_factory=dict, description="categorical field -> every value seen, sorted (exact strings)"
    )
    ranges: dict[str, NumericRange] = Field(default_factory=dict, description="numeric field -> min and max seen")


class GateCheck(_Contract):
    """One gate a candidate version had to pass before any traffic (the trainer's `_gates`): its figures, the
    bound it was held to and, in words, why it passed or failed."""

    name: str = Field(min_length=1, description="e.g. pr_auc_gain, ece_increase, slice_pr_auc_drop, variants")
    passed: bool
    value: float | None = Field(
        None, allow_inf_nan=False, description="the figure compared with `threshold` (None: could not be measured)"
    )
    threshold: float | None = Field(None, allow_inf_nan=False, description="the bound `value` was held to")
    values: dict[str, Any] = Field(
        default_factory=dict, description="the figures behind `value` (both models, CI ends)"
    )
    reason: str = Field(min_length=1)


class VersionGates(_Contract):
    """`gates` of metadata.json: whether the version may be given traffic. `status` "candidate": every check
    passed (or none needed a stable to compare with); "rejected": published so a person can read why, never to
    be rolled out (the controller refuses it; `resolve(..., "latest")` skips it). `stable_version` is the
    version it was compared with (None: no comparison was asked for)."""

    status: Literal["candidate", "rejected"]
    passed: bool
    stable_version: str | None = Field(None, pattern=r"^v\d+$")
    split: str = Field("test", description="the rows the checks ran on: the newest labelled window")
    checks: list[GateCheck] = Field(default_factory=list)

    @model_validator(mode="after")
    def _status_follows_checks(self) -> VersionGates:
        if self.passed != all(check.passed for check in self.checks):
            raise ValueError("passed must be true exactly when every check passed")
        if (self.status == "rejected") == self.passed:
            raise ValueError(f"status {self.status!r} contradicts passed={self.passed}")
        return self

    def failed(self) -> list[GateCheck]:
        return [check for check in self.checks if not check.passed]

    def summary(self) -> str:
        """One line: the failed checks with their reasons, or that every check passed."""
        failed = self.failed()
        if not failed:
            return "every gate passed"
        return "; ".join(f"{check.name}: {check.reason}" for check in failed)


FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A JSON number a model can compute with: no NaN, no infinity, no `true` or "1.5" read as one."""


class ModelMetadata(_Contract):
    """`<repo>/<model>/<version>/metadata.json`: written by the trainer (through `publish`), read by the
    predictor, transformer and drift service. `metrics`, `lineage` and `slices` are informational (the
    model card reads them); what serving depends on is typed."""

    schema_version: int = SCHEMA_VERSION
    model: str = Field(min_length=1)
    version: str = Field(pattern=r"^v\d+$")
    created_at: datetime | None = None
    feature_service: str | None = None
    input: TensorSpec
    output: TensorSpec
    defaults: dict[str, FiniteNumber] = Field(
        default_factory=dict, description="training medians of numeric features (finite numbers, never strings)"
    )
    files: dict[str, Sha256] = Field(default_factory=dict)
    variants: dict[str, Variant] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    slices: dict[str, Any] = Field(default_factory=dict)
    training_domain: TrainingDomain | None = Field(
        None, description="what the model saw in training (vocabularies, ranges); None: published before it existed"
    )
    gates: VersionGates | None = Field(
        None, description="the gates before any traffic and their verdict; None: published before they existed"
    )

    @property
    def rejected(self) -> bool:
        """Published as rejected by its gates: never to be rolled out or served as "latest"."""
        return self.gates is not None and self.gates.status == "rejected"

    def numeric_columns(self) -> list[str]:
        return [c.name for c in self.input.columns if c.kind == "numeric"]

    def published_variants(self) -> dict[str, Variant]:
        return {name: v for name, v in self.variants.items() if v.published}


class ModelRepoError(Exception):
    """Base of every model repository error; the message says what to do."""


class VersionNotFound(ModelRepoError):
    """The requested model or version is not in the repository."""


class DigestMismatch(ModelRepoError):
    """A file of a published version is missing or does not match its recorded sha256."""


class ModelMetadataError(ModelRepoError):
    """metadata.json does not fit the contract (ModelMetadata): a field missing or wrong, or a schema
    version this code cannot read."""


class SignatureError(ModelRepoError):
    """A signing key is configured and the version's metadata.json.sig is missing or does not match."""


@dataclass(frozen=True)
class SigningKeys:
    """HMAC keys for metadata.json: the first signs, any verifies (rotation)."""

    keys: tuple[bytes, ...]

    @classmethod
    def from_file(cls, path: Path | str) -> SigningKeys:
        try:
            lines = Path(path).read_bytes().splitlines()
        except OSError as e:
            raise ModelRepoError(f"cannot read the model signing key file {path}: {e.strerror}") from e
        keys = tuple(line.strip() for line in lines if line.strip())
        if not keys:
            raise ModelRepoError(f"the model signing key file {path} is empty")
        if any(len(key) < 32 for key in keys):
            raise ModelRepoError(f"a key in {path} is shorter than 32 bytes: use e.g. `openssl rand -hex 32`")
        return cls(keys)

    @classmethod
    def from_env(cls) -> SigningKeys | None:
        """The keys of FLYWHEEL_MODEL_SIGNING_KEY_FILE, or None when it is unset or empty (no signing)."""
        path = os.environ.get(SIGNING_KEY_ENV, "").strip()
        return cls.from_file(path) if path else None

    @staticmethod
    def key_id(key: bytes) -> str:
        """A name for a key that reveals nothing about it: the first 12 hex digits of its sha256."""
        return hashlib.sha256(key).hexdigest()[:12]

    def sign(self, document: bytes) -> dict[str, str]:
        key = self.keys[0]
        mac = hmac.new(key, document, hashlib.sha256).hexdigest()
        return {"algorithm": "hmac-sha256", "key_id": self.key_id(key), "signature": mac}

    def verify(self, document: bytes, signature: dict[str, Any], where: str) -> None:
        if signature.get("algorithm") != "hmac-sha256" or not isinstance(signature.get("signature"), str):
            raise SignatureError(f"{where}: not an hmac-sha256 signature")
        for key in self.keys:
            if hmac.compare_digest(hmac.new(key, document, hashlib.sha256).hexdigest(), signature["signature"]):
                return
        raise SignatureError(
            f"{where}: the signature (key {signature.get('key_id', '?')}) does not match metadata.json under any "
            f"configured key ({', '.join(self.key_id(k) for k in self.keys)}): the version was modified after "
            "publishing, or signed with another key; republish it"
        )


# The default of `keys` arguments: read FLYWHEEL_MODEL_SIGNING_KEY_FILE at call time.
FROM_ENV: Any = object()


def _keys(keys: SigningKeys | None) -> SigningKeys | None:
    return SigningKeys.from_env() if keys is FROM_ENV else keys


@dataclass(frozen=True)
class ModelVersion:
    """A verified, published model version."""

    path: Path
    metadata: dict[str, Any]
    """The file as written (every field, informational ones included)."""
    spec: ModelMetadata
    """The same, validated against the contract: what serving code reads."""

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def model(self) -> str:
        return self.spec.model

    def file(self, name: str) -> Path:
        return self.path / name


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def list_versions(repo: Path, model: str) -> list[str]:
    """Published versions of `model`, oldest first (a directory without metadata.json is not published)."""
    root = Path(repo) / model
    if not root.is_dir():
        return []
    numbered = []
    for child in root.iterdir():
        match = _VERSION_RE.match(child.name)
        if match and (child / METADATA_FILE).is_file():
            numbered.append((int(match.group(1)), child.name))
    return [name for _, name in sorted(numbered)]


def resolve(repo: Path, model: str, version: str = "latest") -> Path:
    """The directory of `version` of `model`; "latest" is the highest vN not published as rejected by its
    gates (a rejected version is there to be read, not served by default)."""
    versions = list_versions(repo, model)
    if not versions:
        raise VersionNotFound(f"no published version of model '{model}' under {repo}: train one first (make train)")
    if version == "latest":
        accepted = latest_accepted(repo, model)
        if accepted is None:
            raise VersionNotFound(
                f"every published version of model '{model}' under {repo} ({', '.join(versions)}) was rejected by "
                "its gates (metadata.json `gates`); train a better one or name a version"
            )
        return Path(repo) / model / accepted
    if version not in versions:
        raise VersionNotFound(
            f"model '{model}' has no version '{version}' under {repo}; published: {', '.join(versions)}"
        )
    return Path(repo) / model / version


def latest_accepted(repo: Path, model: str) -> str | None:
    """The highest published version of `model` whose metadata does not say it was rejected by its gates
    (versions from before gates existed count as accepted); None when there is none. Reads only
    metadata.json: load the version to verify it."""
    for version in reversed(list_versions(repo, model)):
        gates = read_metadata(Path(repo) / model / version).get("gates")
        if not (isinstance(gates, dict) and gates.get("status") == "rejected"):
            return version
    return None


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / METADATA_FILE).read_text())
    except FileNotFoundError as e:
        raise VersionNotFound(f"{path} has no {METADATA_FILE}: it is not a published version") from e
    except json.JSONDecodeError as e:
        raise ModelRepoError(f"{path / METADATA_FILE} is not valid JSON ({e.msg} at line {e.lineno})") from e


def parse_metadata(document: dict[str, Any], where: str = METADATA_FILE) -> ModelMetadata:
    """Validate a metadata.json document; ModelMetadataError names each wrong field, or the schema version."""
    if not isinstance(document, dict):
        raise ModelMetadataError(f"{where}: expected a JSON object, got {type(document).__name__}")
    schema = document.get("schema_version", 1)
    if schema not in SUPPORTED_SCHEMA_VERSIONS:
        raise ModelMetadataError(
            f"{where}: schema_version {schema!r} is not one this code reads "
            f"({', '.join(map(str, sorted(SUPPORTED_SCHEMA_VERSIONS)))}); upgrade the reader or republish"
        )
    try:
        return ModelMetadata.model_validate(document)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(root)'}: {error['msg']}" for error in e.errors()[:10]
        )
        raise ModelMetadataError(f"{where} does not fit the model metadata contract: {problems}") from e


def check_signature(path: Path, keys: SigningKeys | None = FROM_ENV) -> None:
    """With signing keys (by default those of FLYWHEEL_MODEL_SIGNING_KEY_FILE), refuse a version whose
    metadata.json.sig is missing or wrong; without keys, do nothing."""
    keys = _keys(keys)
    if keys is None:
        return
    path = Path(path)
    signature_path = path / SIGNATURE_FILE
    try:
        signature = json.loads(signature_path.read_text())
    except FileNotFoundError as e:
        raise SignatureError(
            f"{path} has no {SIGNATURE_FILE} but a signing key is configured ({SIGNING_KEY_ENV}): it was published "
            "without the key, or its signature was removed; republish it with the key"
        ) from e
    except (OSError, json.JSONDecodeError) as e:
        raise SignatureError(f"{signature_path} is unreadable: {e}") from e
    if not isinstance(signature, dict):
        raise SignatureError(f"{signature_path}: expected a JSON object")
    keys.verify((path / METADATA_FILE).read_bytes(), signature, str(signature_path))


def load_version(path: Path, verify: bool = True, keys: SigningKeys | None = FROM_ENV) -> ModelVersion:
    """Read a version's metadata, validate it against ModelMetadata and, unless `verify` is false, check its
    signature (when signing keys are configured) and every file's sha256."""
    path = Path(path)
    if verify:
        check_signature(path, keys)
    metadata = read_metadata(path)
    spec = parse_metadata(metadata, str(path / METADATA_FILE))
    if verify:
        for name, expected in sorted(metadata.get("files", {}).items()):
            target = path / name
            if not target.is_file():
                raise DigestMismatch(f"{target} is listed in {METADATA_FILE} but missing; republish the version")
            actual = sha256_file(target)
            if actual != expected:
                raise DigestMismatch(
                    f"{target} has sha256 {actual}, but {METADATA_FILE} records {expected}: "
                    "the published version was modified; republish it instead of editing it"
                )
    return ModelVersion(path=path, metadata=metadata, spec=spec)


def next_version(repo: Path, model: str) -> str:
    versions = list_versions(repo, model)
    last = int(versions[-1].removeprefix("v")) if versions else 0  # list_versions: only names matching v<N>
    return f"v{last + 1}"


def publish(
    staging_dir: Path,
    repo: Path,
    model: str,
    metadata: dict[str, Any] | None = None,
    keys: SigningKeys | None = FROM_ENV,
) -> Path:
    """Publish the files in `staging_dir` as the next version of `model`; returns its directory.

    `metadata` (or the staging dir's metadata.json) gets `model`, `version` and `files` filled in and is
    written last, then signed when signing keys are configured. The staging directory is renamed into
    place, so it must be on the same filesystem as the repository (create it under `repo` with
    `staging_path`).
    """
    keys = _keys(keys)
    staging_dir = Path(staging_dir)
    if metadata is None:
        metadata = read_metadata(staging_dir)
    root = Path(repo) / model
    root.mkdir(parents=True, exist_ok=True)
    version = next_version(repo, model)
    files = {}
    for entry in sorted(staging_dir.rglob("*")):
        if entry.is_file() and entry.name not in (METADATA_FILE, SIGNATURE_FILE):
            files[entry.relative_to(staging_dir).as_posix()] = sha256_file(entry)
    metadata = {"schema_version": SCHEMA_VERSION, **metadata, "model": model, "version": version, "files": files}
    parse_metadata(metadata, f"{staging_dir / METADATA_FILE} (about to be published as {model} {version})")
    document = (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()
    tmp = staging_dir / (METADATA_FILE + ".tmp")
    tmp.write_bytes(document)
    os.replace(tmp, staging_dir / METADATA_FILE)
    if keys is not None:
        (staging_dir / SIGNATURE_FILE).write_text(json.dumps(keys.sign(document), indent=2) + "\n")
    else:
        (staging_dir / SIGNATURE_FILE).unlink(missing_ok=True)
    target = root / version
    try:
        os.rename(staging_dir, target)
    except OSError as e:
        raise ModelRepoError(f"could not move {staging_dir} into place as {target}: {e.strerror}") from e
    return target


def staging_path(repo: Path, model: str) -> Path:
    """A fresh staging directory inside the repository (same filesystem, so publish can rename it)."""
    root = Path(repo) / model
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{os.getpid()}-{os.urandom(4).hex()}"
    staging.mkdir()
    return staging
