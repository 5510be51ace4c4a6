"""The controller's Kubernetes API client: credentials and errors that say what to fix.

Like the router's ConfigMap route source, it speaks to the API server with plain `httpx` (list, watch, get,
merge patches, a POST for Events, Leases in `_leader`) instead of a Kubernetes client library: a dozen REST calls
do not justify one. `KubeClient` adds the credentials (the service account token re-read from its file on
every request, because the kubelet rotates it; or a kubeconfig's token or client certificate) and turns every
failure into a StoreError that says what to fix: the URL when the server is unreachable, the token on a 401,
and on a 403 the exact RBAC rule (verb, resource, API group, namespace) the ServiceAccount lacks, derived from
the request itself so no call site can name the wrong one. The ModelRollout store over it is `_store_kube`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
from collections.abc import AsyncGenerator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import yaml

from ._ports import ConflictError, StoreError

log = logging.getLogger("flywheel_controller.kube")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
WATCH_TIMEOUT_S = 300
"""The server ends each watch after this long (s), so a silently dead connection is noticed; re-opened at once."""
WATCH_READ_SLACK_S = 30.0
"""Silence on a watch longer than its timeout plus this (s) means the connection is gone."""
BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 5.0
"""Re-list delays while the API server fails double from the initial one up to this cap (s)."""
EVENT_MESSAGE_MAX = 1024
"""Event messages are cut to this many characters (the API server refuses longer ones past 1 KiB of note)."""

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


class NotFoundError(StoreError):
    """404: the object (or the resource type: is the CRD installed?) does not exist."""


class GoneError(StoreError):
    """410: a watch's resourceVersion is too old; list again."""


class KubeClient:
    """Authenticated JSON requests to one API server, with errors that say what to fix."""

    def __init__(
        self,
        api_url: str,
        token_file: Path | None,
        ca_file: Path | None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        *,
        token: str | None = None,
        verify: ssl.SSLContext | bool | None = None,
        namespace: str | None = None,
    ) -> None:
        """`token_file` is re-read on every request (None: no bearer token, e.g. a client certificate
        authenticates); `token` is a fixed one (a kubeconfig's). `verify` overrides `ca_file` (a kubeconfig's
        CA data and client certificate, already loaded). `namespace`: the default one the credentials came with."""
        self.api_url = api_url.rstrip("/")
        self.token_file = None if token_file is None else Path(token_file)
        self.namespace = namespace
        self._token = token
        if verify is None:
            verify = True
            if ca_file is not None:
                try:
                    verify = ssl.create_default_context(cafile=str(ca_file))
                except (OSError, ssl.SSLError) as e:
                    raise StoreError(
                        f"the API server's CA bundle {ca_file} cannot be read ({e}): check the CA file setting "
                        "(in a pod: the service account mount's ca.crt)"
                    ) from e
        self.timeout = timeout
        self._client = httpx.AsyncClient(base_url=self.api_url, verify=verify, transport=transport, timeout=timeout)

    @classmethod
    def in_cluster(
        cls, transport: httpx.AsyncBaseTransport | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR
    ) -> KubeClient:
        """The pod's own service account: KUBERNETES_SERVICE_HOST/PORT, its token, CA and namespace."""
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise StoreError(
                "KUBERNETES_SERVICE_HOST/PORT are not in the environment (not in a pod): give a kubeconfig "
                "(FLYWHEEL_CONTROLLER_KUBECONFIG) or the API URL"
            )
        api_url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        try:
            namespace: str | None = (account_dir / "namespace").read_text().strip() or None
        except OSError:
            namespace = None  # the caller names the namespace then
        ca_file = account_dir / "ca.crt"
        return cls(
            api_url, account_dir / "token", ca_file if ca_file.exists() else None, transport, namespace=namespace
        )

    @classmethod
    def from_kubeconfig(
        cls,
        path: Path | None = None,
        context: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> KubeClient:
        """A client for a kubeconfig's context (default: its current-context; path default: $KUBECONFIG's first
        file, else ~/.kube/config), authenticated by its token, token file or client certificate."""
        if path is None:
            env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
            path = Path(env) if env else Path.home() / ".kube" / "config"
        path = Path(path).expanduser()
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise StoreError(f"kubeconfig {path} cannot be read ({e})") from e
        where = f"kubeconfig {path}"
        name = context or config.get("current-context")
        if not name:
            raise StoreError(f"{where} has no current-context: name a context")
        ctx = _named(config, "contexts", name, where)
        cluster = _named(config, "clusters", ctx.get("cluster"), where)
        user = _named(config, "users", ctx.get("user"), where) if ctx.get("user") else {}
        server = cluster.get("server")
        if not server:
            raise StoreError(f"{where}: cluster '{ctx.get('cluster')}' has no server URL")
        if "exec" in user or "auth-provider" in user:
            raise StoreError(
                f"{where}: user '{ctx.get('user')}' authenticates through an exec or auth-provider plugin, which "
                "the controller does not run; use a context with a token or a client certificate"
            )
        base = path.parent

        def file_or_data(key: str) -> tuple[Path | None, bytes | None]:
            section = cluster if key == "certificate-authority" else user
            if section.get(f"{key}-data"):
                return None, base64.b64decode(section[f"{key}-data"])
            return (base / section[key], None) if section.get(key) else (None, None)

        try:
            verify: ssl.SSLContext | bool
            if cluster.get("insecure-skip-tls-verify"):
                verify = False
            else:
                ca_path, ca_data = file_or_data("certificate-authority")
                verify = ssl.create_default_context(
                    cafile=None if ca_path is None else str(ca_path),
                    cadata=None if ca_data is None else ca_data.decode(),
                )
            cert_path, cert_data = file_or_data("client-certificate")
            key_path, key_data = file_or_data("client-key")
            if (cert_path or cert_data) and (key_path or key_data):
                if verify is False:
                    verify = ssl.create_default_context()
                    verify.check_hostname, verify.verify_mode = False, ssl.CERT_NONE
                assert isinstance(verify, ssl.SSLContext)
                _load_cert_chain(verify, cert_path, cert_data, key_path, key_data)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise StoreError(f"{where}: the TLS material of context '{name}' cannot be loaded ({e})") from e
        token_file = base / user["tokenFile"] if user.get("tokenFile") else None
        return cls(
            server,
            token_file,
            None,
            transport,
            token=user.get("token"),
            verify=verify,
            namespace=ctx.get("namespace"),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- requests --------------------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        merge_patch: bool = False,
    ) -> dict[str, Any]:
        """The JSON answer of one call; StoreError (NotFoundError on 404, ConflictError on 409) otherwise."""
        headers = self._headers()
        content = None
        if json_body is not None:
            content = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/merge-patch+json" if merge_patch else "application/json"
        try:
            response = await self._client.request(method, path, params=params, content=content, headers=headers)
        except httpx.HTTPError as e:
            raise self._unreachable(e) from e
        self._raise_for(response, method, path, params)
        try:
            return response.json()
        except ValueError as e:
            raise StoreError(f"{method} {path} answered {response.status_code} with a body that is not JSON") from e

    async def watch(
        self, path: str, params: Mapping[str, str], timeout_s: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The events of a watch (`params` carry watch=1 and where to start) until the server ends it.
        GoneError on 410 (as a status or as an ERROR event), StoreError when it fails or breaks."""
        timeout = httpx.Timeout(self.timeout, read=timeout_s + WATCH_READ_SLACK_S)
        try:
            async with self._client.stream(
                "GET", path, params=params, headers=self._headers(), timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._raise_for(response, "GET", path, params)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        if status.get("code") == 410:
                            raise GoneError(f"watch {path}: {status.get('message') or 'resourceVersion too old'}")
                        raise StoreError(f"watch {path} failed ({status.get('code')}): {status.get('message')}")
                    yield event
        except httpx.HTTPError as e:
            raise self._unreachable(e) from e
        except ValueError as e:
            raise StoreError(f"watch {path}: the API server sent a line that is not JSON ({e})") from e

    # -- helpers ---------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self._token
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as e:
                raise StoreError(
                    f"cannot read the service account token {self.token_file} ({e.strerror}): check the token "
                    "file setting and that the pod mounts its token"
                ) from e
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _unreachable(self, error: httpx.HTTPError) -> StoreError:
        return StoreError(
            f"the API server at {self.api_url} is unreachable ({type(error).__name__}: {error}): check its URL "
            "(in a pod: KUBERNETES_SERVICE_HOST/PORT; outside: the kubeconfig's server) and the network to it"
        )

    def _raise_for(self, response: httpx.Response, method: str, path: str, params: Mapping[str, str] | None) -> None:
        status = response.status_code
        if status < 300:
            return
        verb, resource, group, namespace = _describe(method, path, params)
        try:
            detail = response.json().get("message") or response.text
        except ValueError:
            detail = response.text
        detail = str(detail)[:500]
        what = f"{verb} {resource} in namespace '{namespace}'"
        if status == 401:
            source = f"the token in {self.token_file}" if self.token_file else "the kubeconfig's credentials"
            raise StoreError(
                f"{what}: the API server refused the credentials (401): {source} is expired or invalid "
                f"(in a pod: check the ServiceAccount token mount) ({detail})"
            )
        if status == 403:
            raise StoreError(
                f"the controller's ServiceAccount lacks the RBAC verb '{verb}' on {resource} in namespace "
                f'\'{namespace}\' (a Role rule: apiGroups ["{group}"], resources ["{resource}"], verbs '
                f'["{verb}"]) ({detail})'
            )
        if status == 404:
            raise NotFoundError(f"{what}: not found ({detail})")
        if status == 409:
            raise ConflictError(f"{what}: conflict, the object changed since it was read ({detail})")
        if status == 410:
            raise GoneError(f"{what}: gone ({detail})")
        raise StoreError(f"{what} answered {status} ({detail})")


def _describe(method: str, path: str, params: Mapping[str, str] | None) -> tuple[str, str, str, str]:
    """(RBAC verb, resource[/subresource], API group, namespace) of a request, for error messages."""
    parts = path.strip("/").split("/")
    group = "" if parts[:1] == ["api"] else parts[1] if len(parts) > 1 else ""
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] if rest else path
    named = len(rest) > 1
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if method == "GET":
        verb = "watch" if (params or {}).get("watch") in ("1", "true") else "get" if named else "list"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = _VERBS.get(method, method.lower())
    return verb, resource, group, namespace


def _named(config: Mapping[str, Any], section: str, name: Any, where: str) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if entry.get("name") == name:
            return entry.get(section[:-1]) or {}
    raise StoreError(f"{where} has no {section[:-1]} named '{name}'")


def _load_cert_chain(
    context: ssl.SSLContext,
    cert_path: Path | None,
    cert_data: bytes | None,
    key_path: Path | None,
    key_data: bytes | None,
) -> None:
    """Load a client certificate given as files or as data: ssl only reads files, so data goes through
    private temporary files that are deleted as soon as it is loaded (the key never stays on disk)."""
    written: list[str] = []
    try:
        paths = []
        for file, data in ((cert_path, cert_data), (key_path, key_data)):
            if data is None:
                paths.append(str(file))
                continue
            fd, name = tempfile.mkstemp(prefix="flywheel-kube-", suffix=".pem")  # mode 0600
            written.append(name)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            paths.append(name)
        context.load_cert_chain(certfile=paths[0], keyfile=paths[1])
    finally:
        for name in written:
            os.unlink(name)


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: UTC with microseconds, e.g. 2026-11-30T12:00:00.000000Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
