"""The Kubernetes API, through kr8s: where it is, who we are, and the few calls we make.

In a pod the service account is used (its token, its CA, and
``KUBERNETES_SERVICE_HOST``); outside one, ``--kubeconfig`` or
``KUBECONFIG``. kr8s loads either, makes the TLS context and the HTTP session,
and re-reads its credentials when the server answers 401; the projected
service-account token is also re-read as soon as the kubelet rotates it
(watchfiles on its directory), and every request carries the token read
last. The informer (``flowlog.cluster.informer``) builds list and watch on
``request`` and ``stream``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import watchfiles
from tenacity import wait_exponential_jitter

log = logging.getLogger(__name__)

CORE = "v1"
# Watches are asked to end after this long (the server may end them sooner);
# the client gives up on a silent one a little later.
WATCH_SECONDS = 300
READ_MARGIN_SECONDS = 30
REQUEST_SECONDS = 30


def backoff() -> wait_exponential_jitter:
    """How long to wait before trying the API again: 0.5 s doubling to 8 s, with jitter,
    so that a cluster's agents do not all come back at once."""
    return wait_exponential_jitter(multiplier=0.5, max=8, jitter=1)


@dataclass(frozen=True)
class Resource:
    """A kind of object, and where its collection lives."""

    kind: str
    version: str  # "v1", or "group/version"
    plural: str

    @property
    def base(self) -> str:
        return "/api" if self.version == CORE else "/apis"


PODS = Resource("Pod", CORE, "pods")
POLICY_ENDPOINTS = Resource("PolicyEndpoint", "networking.k8s.aws/v1alpha1", "policyendpoints")
EVENTS = Resource("Event", CORE, "events")


class ApiError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


def where(settings: Any, environ: os._Environ | dict | None = None) -> str | None:
    """How the agent reaches the API: 'kubeconfig PATH', 'in-cluster', or None."""
    environ = os.environ if environ is None else environ
    if settings.kubeconfig:
        return f"kubeconfig {settings.kubeconfig}"
    token = Path(settings.service_account_dir) / "token"
    if environ.get("KUBERNETES_SERVICE_HOST") and token.exists():
        return "in-cluster"
    return None


class KubeClient:
    """An authenticated kr8s session to the API server."""

    def __init__(self, settings: Any, environ: os._Environ | dict | None = None) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.mode = where(settings, self.environ) or "none"
        self._api: Any = None
        self._token_dir = None if settings.kubeconfig else Path(settings.service_account_dir)
        self._token = ""

    @property
    def server(self) -> str:
        return self._api.auth.server if self._api is not None else ""

    async def connect(self) -> None:
        """Load the credentials and check the server answers (raises if it does not)."""
        import kr8s.asyncio  # here only: nothing is loaded when no cluster is in use
        from kr8s import ServerError

        kubeconfig: str | dict = self.settings.kubeconfig
        if self._token_dir is not None:
            self._read_token()
            kubeconfig = self._in_cluster_config()
        try:
            self._api = await kr8s.asyncio.api(kubeconfig=kubeconfig)
        except ServerError as error:
            raise _api_error(error) from None

    def _in_cluster_config(self) -> dict:
        """The pod's service account as a kubeconfig, as client-go's in-cluster config."""
        assert self._token_dir is not None
        host = self.environ["KUBERNETES_SERVICE_HOST"]
        port = self.environ.get("KUBERNETES_SERVICE_PORT", "443")
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "in-cluster",
                    "cluster": {
                        "server": server,
                        "certificate-authority": str(self._token_dir / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "service-account", "user": {"token": self._token}}],
            "contexts": [
                {
                    "name": "in-cluster",
                    "context": {"cluster": "in-cluster", "user": "service-account"},
                }
            ],
            "current-context": "in-cluster",
        }

    def _read_token(self) -> None:
        assert self._token_dir is not None
        try:
            self._token = (self._token_dir / "token").read_text().strip()
        except OSError as error:
            log.warning("cannot read the service account token: %s", error)

    async def follow_token(self) -> None:
        """Re-read the projected token whenever the kubelet rotates it."""
        if self._token_dir is None:
            return
        async for _ in watchfiles.awatch(self._token_dir, watch_filter=None):
            previous = self._token
            self._read_token()
            if self._token != previous:
                log.info("service account token rotated: re-read")

    def _headers(self) -> dict[str, str]:
        # Every request carries the token read last; kr8s' session holds the
        # one it started with.
        return {"Authorization": f"Bearer {self._token}"} if self._token_dir else {}

    async def request(
        self,
        method: str,
        resource: Resource,
        namespace: str = "",
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One call; the decoded JSON answer. Raises ApiError, or httpx's errors."""
        from kr8s import ServerError

        options: dict[str, Any] = {"params": params, "headers": self._headers()}
        if body is not None:
            options["content"] = orjson.dumps(body)
        try:
            async with self._api.call_api(
                method,
                version=resource.version,
                base=resource.base,
                namespace=namespace or None,
                url=resource.plural,
                timeout=REQUEST_SECONDS,
                **options,
            ) as response:
                return orjson.loads(response.content)
        except ServerError as error:
            raise _api_error(error) from None

    @contextlib.asynccontextmanager
    async def stream(
        self, resource: Resource, params: dict[str, Any]
    ) -> AsyncIterator[AsyncIterator[str]]:
        """A watch of a whole collection: its lines, as they come."""
        import httpx
        from kr8s import ServerError

        timeout = httpx.Timeout(REQUEST_SECONDS, read=WATCH_SECONDS + READ_MARGIN_SECONDS)
        try:
            async with self._api.call_api(
                "GET",
                version=resource.version,
                base=resource.base,
                url=resource.plural,
                params=params,
                headers=self._headers(),
                stream=True,
                timeout=timeout,
            ) as response:
                yield response.aiter_lines()
        except ServerError as error:
            raise _api_error(error) from None


def _api_error(error: Any) -> ApiError:
    response = getattr(error, "response", None)
    status = response.status_code if response is not None else 0
    details = error.status if isinstance(error.status, dict) else {}
    return ApiError(status, details.get("reason", "Error"), details.get("message", str(error)))
