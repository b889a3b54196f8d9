"""The pods' host-side veths: finding them, attaching the programs, watching for new ones.

A veth's tc *egress* hook sees the packets going into the pod, so the
ingress program sits there; its tc *ingress* hook sees what the pod sends,
where the egress program sits. Both are ``direct_action`` classifiers under a
clsact qdisc, with a fixed priority and handle so that attaching again (a
restarted agent, new programs) replaces them in one step, with no moment
without enforcement.

Everything is asynchronous pyroute2 on the caller's event loop; the link
watcher is a netlink socket subscribed to link events, woken by the loop.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK
from pyroute2.protocols import ETH_P_ALL

from flowlog.dataplane.naming import is_pod_veth
from flowlog.dataplane.programs import EGRESS_PROGRAM, INGRESS_PROGRAM

TC_INGRESS_HOOK = 0xFFFFFFF2
TC_EGRESS_HOOK = 0xFFFFFFF3
HOOK_NAMES = {TC_INGRESS_HOOK: "tc-ingress", TC_EGRESS_HOOK: "tc-egress"}
# Which program goes on which hook of the pod's host-side veth.
PROGRAM_HOOKS = {INGRESS_PROGRAM: TC_EGRESS_HOOK, EGRESS_PROGRAM: TC_INGRESS_HOOK}
FILTER_PRIORITY = 1
FILTER_HANDLE = 1
FILTER_NAME_PREFIX = "flowlog:"
# Errors that mean "already gone": the link, the qdisc or the filter.
GONE = (errno.ENOENT, errno.ENODEV, errno.EINVAL)


@dataclass(frozen=True)
class Attachment:
    ifindex: int
    ifname: str
    hook: str  # tc-ingress or tc-egress
    program: str  # handle_ingress or handle_egress (the filter's name, without the prefix)


@dataclass(frozen=True)
class LinkEvent:
    added: bool  # False: the link is gone (or no longer a pod veth)
    ifindex: int
    ifname: str


def _iproute(netns: str | None, **options: object) -> AsyncIPRoute:
    if netns:
        return AsyncIPRoute(netns=netns, flags=0, **options)
    return AsyncIPRoute(**options)


class Links:
    """Netlink requests in the namespace holding the pod veths (None: our own)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._ipr = _iproute(netns)

    async def __aenter__(self) -> Links:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._ipr.close()

    async def pod_veths(self) -> dict[int, str]:
        """ifindex -> name of every link named like a pod's host-side veth."""
        found = {}
        async for link in await self._ipr.link("dump"):
            name = link.get("ifname") or ""
            if is_pod_veth(name):
                found[link["index"]] = name
        return found

    async def attach(self, ifindex: int, program_fds: Mapping[str, int]) -> None:
        try:
            await self._ipr.tc("add", "clsact", index=ifindex)
        except NetlinkError as error:
            if error.code != errno.EEXIST:
                raise
        for program, hook in PROGRAM_HOOKS.items():
            await self._ipr.tc(
                "replace-filter",
                "bpf",
                index=ifindex,
                handle=FILTER_HANDLE,
                parent=hook,
                prio=FILTER_PRIORITY,
                protocol=ETH_P_ALL,
                fd=program_fds[program],
                name=FILTER_NAME_PREFIX + program,
                direct_action=True,
            )

    async def detach(self, ifindex: int) -> None:
        """Remove our filters, and the clsact qdisc if nothing else uses it."""
        for hook in PROGRAM_HOOKS.values():
            try:
                await self._ipr.tc(
                    "del-filter",
                    "bpf",
                    index=ifindex,
                    handle=FILTER_HANDLE,
                    parent=hook,
                    prio=FILTER_PRIORITY,
                    protocol=ETH_P_ALL,
                )
            except NetlinkError as error:
                if error.code not in GONE:
                    raise
        try:
            if not await self._filters(ifindex):
                await self._ipr.tc("del", "clsact", index=ifindex)
        except NetlinkError as error:
            if error.code not in GONE:
                raise

    async def _filters(self, ifindex: int) -> list[dict]:
        found = []
        for hook in PROGRAM_HOOKS.values():
            async for message in await self._ipr.get_filters(index=ifindex, parent=hook):
                if message.get("kind"):
                    found.append(message)
        return found

    async def attachments(self) -> list[Attachment]:
        """flowlog's programs on every pod veth, as tc reports them."""
        found = []
        for ifindex, ifname in sorted((await self.pod_veths()).items()):
            for message in await self._filters(ifindex):
                options = message.get("options")
                name = (options.get("TCA_BPF_NAME") if options else None) or ""
                if not name.startswith(FILTER_NAME_PREFIX):
                    continue
                found.append(
                    Attachment(
                        ifindex=ifindex,
                        ifname=ifname,
                        hook=HOOK_NAMES.get(message["parent"], hex(message["parent"])),
                        program=name.removeprefix(FILTER_NAME_PREFIX),
                    )
                )
        return found


class LinkWatcher:
    """Pod veths appearing and disappearing, as the kernel announces them.

    Subscribed on entry, so a scan made after entering misses nothing.
    """

    def __init__(self, netns: str | None = None) -> None:
        self._ipr = _iproute(netns, groups=RTMGRP_LINK)

    async def __aenter__(self) -> LinkWatcher:
        await self._ipr.bind(groups=RTMGRP_LINK)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._ipr.close()

    async def __aiter__(self) -> AsyncIterator[LinkEvent]:
        while True:
            async for message in self._ipr.get():
                event = message.get("event")
                name = message.get("ifname") or ""
                if event == "RTM_NEWLINK":
                    yield LinkEvent(is_pod_veth(name), message["index"], name)
                elif event == "RTM_DELLINK":
                    yield LinkEvent(False, message["index"], name)
