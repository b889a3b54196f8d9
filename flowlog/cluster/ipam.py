"""This node's pods from the VPC CNI's checkpoint, for naming flows without the API.

The CNI rewrites ``/var/run/aws-node/ipam.json`` on every pod add and
delete::

    {"version": "vpc-cni-ipam/1", "allocations": [{"containerID": "…",
      "ipv4": "10.0.1.5", "ipv6": "", "metadata": {"k8sPodNamespace": "ns",
      "k8sPodName": "name"}}, …]}

Each allocation claims its addresses for its pod (no workload: the
checkpoint does not know owners); an allocation that goes away releases
them. The API's claims win where both know an address. The file is watched
(watchfiles on its directory, as it is replaced, not edited); a file that
does not parse keeps the claims of the last good one, counted and logged
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import orjson
import watchfiles

from flowlog.cluster import metrics
from flowlog.cluster.peers import CHECKPOINT, POD, Identity, Peers, address_bytes

log = logging.getLogger(__name__)


def allocations(document: Any) -> dict[tuple[str, bytes], Identity]:
    """(container, address) -> pod for every allocation; raises ValueError on a bad shape."""
    if not isinstance(document, dict) or not isinstance(document.get("allocations"), list):
        raise ValueError("expected an object with a list of allocations")
    claims = {}
    for index, allocation in enumerate(document["allocations"]):
        if not isinstance(allocation, dict):
            raise ValueError(f"allocations[{index}]: expected an object")
        metadata = allocation.get("metadata") or {}
        name, namespace = metadata.get("k8sPodName"), metadata.get("k8sPodNamespace")
        if not name or not namespace:
            continue  # an address the CNI holds for no pod
        owner = str(allocation.get("containerID") or f"{namespace}/{name}")
        for family in ("ipv4", "ipv6"):
            address = allocation.get(family)
            if address:
                try:
                    key = address_bytes(str(address))
                except ValueError:
                    raise ValueError(
                        f"allocations[{index}].{family}: not an address: {address!r}"
                    ) from None
                claims[(owner, key)] = Identity(POD, str(name), str(namespace))
    return claims


class CheckpointNames:
    """The checkpoint's claims on addresses, kept up to date with the file."""

    def __init__(self, path: str | Path, peers: Peers) -> None:
        self.path = Path(path)
        self.peers = peers
        self.pods = 0
        self.problem: str | None = None
        self.read_once = asyncio.Event()

    def read(self) -> None:
        self.read_once.set()
        try:
            document = orjson.loads(self.path.read_bytes())
            claims = allocations(document)
        except FileNotFoundError:
            metrics.CHECKPOINT_READS.labels(result="missing").inc()
            claims = {}
        except (OSError, orjson.JSONDecodeError, ValueError) as error:
            metrics.CHECKPOINT_READS.labels(result="malformed").inc()
            problem = f"{self.path}: {error}"
            if problem != self.problem:
                log.warning("%s; the pods it named before stay named", problem)
            self.problem = problem
            return
        else:
            metrics.CHECKPOINT_READS.labels(result="ok").inc()
        self.problem = None
        self.peers.replace_claims(CHECKPOINT, claims)
        self.pods = len({(i.namespace, i.name) for i in claims.values()})

    async def follow(self) -> None:
        """Read the file now and whenever its directory changes."""
        directory = self.path.parent
        if not directory.is_dir():
            self.read()
            if not directory.parent.is_dir():
                return  # no VPC CNI on this machine, nor a place for it
            # The CNI may come up after us.
            async for _ in watchfiles.awatch(directory.parent, watch_filter=None):
                if directory.is_dir():
                    break
        changes = watchfiles.awatch(directory, watch_filter=None)
        next_change = asyncio.ensure_future(anext(changes))
        try:
            await asyncio.sleep(0)  # watching from here on: reading now misses nothing
            self.read()
            while True:
                await next_change
                self.read()
                next_change = asyncio.ensure_future(anext(changes))
        finally:
            next_change.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await next_change
            await changes.aclose()
