"""The data plane's lifecycle: load, keep policies and veths in step, close.

``load()`` compiles and pins the programs, reads every PolicyEndpoint its
policy source has (``--policy-dir``, or the Kubernetes API), programs the
maps and attaches the programs to the pods' veths. ``run()`` then follows
the policy source and the node's links (netlink link events) until
cancelled. ``close()`` detaches and unpins
everything, unless ``--keep-programs`` leaves enforcement in place.

Which veths carry the programs: in standard mode, those of pods some policy
selects (other pods allow everything and produce no events); in strict mode,
every ``eni*`` veth, denying by default until its pod's policies arrive.

A pod's rules are written under a fresh ``rules_id`` and switched to with one
update of its endpoint entry, so a policy change takes effect atomically per
pod; conntrack is left alone, so established flows carry on.

Restarting over the pins of an agent that stopped with ``--keep-programs``:
the new load opens the pinned conntrack again (established flows stay), loads
new programs and maps, replaces the filters on every veth in one step each,
detaches flowlog filters from veths that no longer need them, and replaces
the other pins; the old programs and maps are freed by the kernel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from flowlog.config import ConfigError, Settings
from flowlog.dataplane import maps, metrics
from flowlog.dataplane.attribution import ENDPOINT, POLICY, Attribution
from flowlog.dataplane.compiler import (
    CompileError,
    DirectionRules,
    PodKey,
    PodRules,
    compile_pods,
)
from flowlog.dataplane.links import Links, LinkWatcher
from flowlog.dataplane.naming import host_veth_name
from flowlog.dataplane.policy import (
    EGRESS,
    INGRESS,
    PolicyEndpoint,
    PolicyError,
    parse_bytes,
    parse_document,
)
from flowlog.dataplane.programs import (
    CONNTRACK_MAP,
    RINGBUF_MAP,
    LoadedPrograms,
    PinLayout,
    open_pinned,
    unread_events,
)
from flowlog.dataplane.sources import Content, PolicyDirectory, PolicySource

log = logging.getLogger(__name__)

STRICT = "strict"
_T = TypeVar("_T")


@dataclass(frozen=True)
class _Programmed:
    """What the maps hold for one veth."""

    pod: PodKey
    rules: PodRules
    rules_id: int


class Dataplane:
    """flowlog's tc programs, their maps, and the veths they are attached to.

    ``netns`` names the network namespace that holds the pods' veths (the
    tests' "node"); by default it is the agent's own.
    """

    def __init__(
        self,
        settings: Settings,
        netns: str | None = None,
        policies: PolicySource | None = None,
        on_policies: Callable[[list[PolicyEndpoint]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.netns = netns
        if policies is None and settings.policy_dir:
            policies = PolicyDirectory(settings.policy_dir)
        self.policies = policies
        # Told of the documents in force whenever they change (their pods' IPs name flows).
        self.on_policies = on_policies
        self.attribution = Attribution(on_added=self._publish_name)
        self.pins = PinLayout(Path(settings.bpf_pin_dir))
        self.strict = settings.enforcing_mode == STRICT
        self.last_policy_error = ""
        self.rejected: dict[str, str] = {}  # document -> why its latest version was rejected
        self._programs: LoadedPrograms | None = None
        self._seen: dict[str, bytes] = {}  # document -> its latest version read, or why not
        self._in_force: dict[str, list[PolicyEndpoint]] = {}  # document -> what is in force
        self._pods: dict[PodKey, PodRules] = {}
        self._veths: dict[int, str] = {}  # ifindex -> name of every pod veth
        self._attached: set[int] = set()
        self._adopted: set[int] = set()  # attached by a previous agent, not yet replaced
        self._programmed: dict[int, _Programmed] = {}
        self._last_rules_id = 0
        self._inherited_lost = 0  # events a previous agent's programs left unread
        self._closed = False
        self._reconciling = asyncio.Lock()  # link and policy changes reconcile one at a time
        self.policy_updates = 0  # times changed policies were applied to the maps

    # --- the interface the agent uses ------------------------------------------

    def load(self) -> None:
        """Compile, load, pin, program every policy and attach to existing veths."""
        if self.policies is not None:
            self.policies.check()
            self._sync_policies(at_start=True)
        # The ring buffer a previous agent left pinned, before the new load replaces the pin.
        previous_events = open_pinned(self.pins.map(RINGBUF_MAP))
        cache = Path(self.settings.program_cache_dir) if self.settings.program_cache_dir else None
        self._programs = LoadedPrograms(self.pins, self.settings.ringbuf_size, cache)
        programs = self._programs
        for number, name in self.attribution.policies.items():
            self._publish_name(POLICY, number, name)
        programs.settings.update(ctypes.c_uint32(maps.SETTING_STRICT), ctypes.c_uint32(self.strict))
        self.set_event_logging(self.settings.enable_policy_event_logs)
        self._blocking(self._adopt_and_reconcile)
        if previous_events is not None:
            # The previous agent's programs are all replaced or detached now:
            # what they left in their ring buffer will never be read.
            self._inherited_lost = unread_events(previous_events)
            os.close(previous_events)
            if self._inherited_lost:
                log.warning(
                    "%d events the previous agent's programs left unread are counted as lost",
                    self._inherited_lost,
                )
        log.info(
            "data plane loaded (%s): %d policies, %d pods attached (%s mode), pinned under %s",
            "compiled" if self._programs.compiled else "compiled programs from the cache",
            len(self._policies()),
            len(self._attached),
            self.settings.enforcing_mode,
            self.pins.root,
        )

    @property
    def conntrack_fd(self) -> int:
        return self._loaded().map_fds[CONNTRACK_MAP]

    @property
    def ringbuf_fd(self) -> int:
        return self._loaded().map_fds[RINGBUF_MAP]

    @property
    def ringbuf_size(self) -> int:
        return self._loaded().ringbuf_size

    def lost_events(self) -> int:
        counts = self._loaded().lost.lookup(ctypes.c_uint32(maps.LOST_POLICY_EVENTS))
        return self._inherited_lost + (sum(counts) if counts is not None else 0)

    def set_event_logging(self, enabled: bool) -> None:
        self._loaded().settings.update(
            ctypes.c_uint32(maps.SETTING_EMIT_EVENTS), ctypes.c_uint32(enabled)
        )

    async def run(self) -> None:
        """Follow the policy directory and the links until cancelled."""
        async with Links(self.netns) as links, LinkWatcher(self.netns) as watcher:
            # Catch up on links that changed between load() and the start of watching.
            async with self._reconciling:
                await self._reconcile(links)
            tasks = [self._follow_links(links, watcher)]
            if self.policies is not None:
                tasks.append(self._follow_policies(links))
            await asyncio.gather(*tasks)

    def close(self) -> None:
        """Detach and unpin everything, unless settings.keep_programs."""
        if self._closed or self._programs is None:
            return
        self._closed = True
        if self.settings.keep_programs:
            log.info("leaving programs attached and pinned under %s", self.pins.root)
        else:
            self._blocking(self._detach_all)
            self.pins.remove()
        self._programs.close()
        metrics.PODS_ATTACHED.set(0)

    def status(self) -> dict[str, Any]:
        return {
            "enforcing_mode": self.settings.enforcing_mode,
            "pin_dir": str(self.pins.root),
            "attached": {
                self._veths.get(ifindex, str(ifindex)): self._pod_label(ifindex)
                for ifindex in sorted(self._attached)
            },
            "selected_pods": sorted(f"{ns}/{name}" for ns, name in self._pods),
            "policies": len(self._policies()),
            "policy_source": self.policies.description if self.policies else None,
            "in_force": sorted(self._in_force),
            "rejected": dict(self.rejected),
            "last_policy_error": self.last_policy_error,
            "policy_updates": self.policy_updates,
        }

    # --- policies --------------------------------------------------------------

    def _sync_policies(self, at_start: bool = False) -> bool:
        """Bring the policies in force up to date with the source; True if they changed.

        Each new or changed document is accepted or rejected on its own; a
        rejected document's earlier version (if any) stays in force. At start,
        a strict source's first problem raises ConfigError instead.
        """
        assert self.policies is not None
        strict = at_start and self.policies.strict_at_start
        try:
            current = self.policies.snapshot()
            for name in set(self._seen) - set(current):
                del self._seen[name]
                self.rejected.pop(name, None)
            in_force = {name: docs for name, docs in self._in_force.items() if name in current}
            changed = in_force.keys() != self._in_force.keys()
            pods = self._compile(in_force, blame="") if changed else self._pods
        except PolicyError as error:
            if strict:
                raise ConfigError(str(error)) from None
            self._report(str(error))
            return False
        for name, content in current.items():
            version = _version(content)
            if self._seen.get(name) == version:
                continue  # unchanged, accepted or already reported
            self._seen[name] = version
            try:
                candidate = {**in_force, name: _parse(content, name)}
                pods = self._compile(candidate, blame=name)
            except PolicyError as error:
                if strict:
                    raise ConfigError(str(error)) from None
                self._reject(name, str(error))
                continue
            in_force = candidate
            self.rejected.pop(name, None)
            changed = True
        if changed:
            self._in_force, self._pods = in_force, pods
            metrics.POLICIES_LOADED.set(len(self._policies()))
            if self.on_policies is not None:
                self.on_policies([doc for docs in in_force.values() for doc in docs])
        return changed

    def _compile(
        self, files: dict[str, list[PolicyEndpoint]], blame: str
    ) -> dict[PodKey, PodRules]:
        endpoints = [endpoint for documents in files.values() for endpoint in documents]
        try:
            return compile_pods(endpoints, lambda ref: self.attribution.policy_id(*ref))
        except CompileError as error:
            raise PolicyError(f"{blame}: {error}" if blame else str(error)) from None

    def _reject(self, name: str, error: str) -> None:
        metrics.POLICY_FILES_REJECTED.inc()
        self.rejected[name] = error
        self._report(error, " (the rules in force stay in force)")
        assert self.policies is not None
        self.policies.rejected(name, error)

    def _report(self, error: str, consequence: str = "") -> None:
        if error != self.last_policy_error:  # a recurring problem is logged once
            log.error("%s%s", error, consequence)
        self.last_policy_error = error

    def _policies(self) -> set[tuple[str, str]]:
        return {doc.policy for docs in self._in_force.values() for doc in docs}

    async def _follow_policies(self, links: Links) -> None:
        assert self.policies is not None
        changes = self.policies.changes()
        next_change = asyncio.ensure_future(anext(changes))
        try:
            # The watch is set up as soon as the iterator first runs; after
            # that, catching up on what changed since load() misses nothing.
            await asyncio.sleep(0)
            await self._apply_policy_changes(links)
            while True:
                await next_change
                await self._apply_policy_changes(links)
                next_change = asyncio.ensure_future(anext(changes))
        finally:
            next_change.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await next_change
            if hasattr(changes, "aclose"):
                await changes.aclose()

    async def _apply_policy_changes(self, links: Links) -> None:
        async with self._reconciling:
            if self._sync_policies():
                await self._reconcile(links)
                self.policy_updates += 1

    # --- veths -----------------------------------------------------------------

    async def _follow_links(self, links: Links, watcher: LinkWatcher) -> None:
        async for event in watcher:
            known = event.ifindex in self._veths or event.ifindex in self._attached
            if event.added or known:
                async with self._reconciling:
                    await self._reconcile(links)

    async def _adopt_and_reconcile(self, links: Links) -> None:
        # Veths a previous agent left programs on are ours to replace or remove:
        # its programs read its own maps, so each must make way for ours.
        self._adopted = {a.ifindex for a in await links.attachments()}
        self._attached.update(self._adopted)
        await self._reconcile(links)

    async def _reconcile(self, links: Links) -> None:
        """Attach, program, detach until the kernel matches the policies and veths."""
        programs = self._loaded()
        self._veths = await links.pod_veths()
        pods_by_veth = {host_veth_name(ns, name): (ns, name) for ns, name in self._pods}
        wanted: dict[int, PodKey | None] = {}
        for ifindex, name in self._veths.items():
            pod = pods_by_veth.get(name)
            if pod is not None or self.strict:
                wanted[ifindex] = pod
        for ifindex in sorted(self._attached - wanted.keys()):
            await links.detach(ifindex)
            self._attached.discard(ifindex)
        for ifindex in list(self._programmed):
            if wanted.get(ifindex) is None:
                self._unprogram(ifindex)
        for ifindex, pod in wanted.items():
            try:
                if pod is not None:
                    self._program(ifindex, pod)
                if ifindex not in self._attached or ifindex in self._adopted:
                    await links.attach(ifindex, programs.program_fds)
                    self._attached.add(ifindex)
                    self._adopted.discard(ifindex)
            except OSError as error:
                self._report(f"{self._veths[ifindex]}: cannot program or attach: {error}")
        metrics.PODS_ATTACHED.set(len(self._attached))

    async def _detach_all(self, links: Links) -> None:
        attached = self._attached | {a.ifindex for a in await links.attachments()}
        for ifindex in sorted(attached):
            await links.detach(ifindex)
        self._attached.clear()

    # --- maps ------------------------------------------------------------------

    def _program(self, ifindex: int, pod: PodKey) -> None:
        rules = self._pods[pod]
        previous = self._programmed.get(ifindex)
        if previous is not None and previous.pod == pod and previous.rules == rules:
            return
        programs = self._loaded()
        self._last_rules_id += 1
        rules_id = self._last_rules_id
        for direction in (INGRESS, EGRESS):
            for key, value in _rule_entries(rules_id, rules.direction(direction)):
                programs.rules[direction].update(key, value)
        namespace, name = pod
        programs.endpoints.update(
            ctypes.c_uint32(ifindex),
            maps.Endpoint(
                endpoint_id=self.attribution.endpoint_id(name, namespace),
                flags=_isolation_flags(rules),
                rules_id=rules_id,
                ingress_policy_id=rules.ingress.isolated_by,
                egress_policy_id=rules.egress.isolated_by,
            ),
        )
        if previous is not None:
            self._delete_rules(previous)
        self._programmed[ifindex] = _Programmed(pod, rules, rules_id)

    def _unprogram(self, ifindex: int) -> None:
        programs = self._loaded()
        programs.endpoints.delete(ctypes.c_uint32(ifindex))
        self._delete_rules(self._programmed.pop(ifindex))

    def _delete_rules(self, programmed: _Programmed) -> None:
        programs = self._loaded()
        for direction in (INGRESS, EGRESS):
            for key, _ in _rule_entries(programmed.rules_id, programmed.rules.direction(direction)):
                programs.rules[direction].delete(key)

    def _publish_name(self, kind: str, number: int, name: tuple[str, str]) -> None:
        if self._programs is None:
            return  # published by load() once the maps exist
        table = self._programs.pod_names if kind == ENDPOINT else self._programs.policy_names
        object_name, namespace = name
        table.update(
            ctypes.c_uint32(number),
            maps.ObjectName(namespace=namespace.encode()[:63], name=object_name.encode()[:255]),
        )

    def _pod_label(self, ifindex: int) -> str | None:
        programmed = self._programmed.get(ifindex)
        return "/".join(programmed.pod) if programmed else None

    def _loaded(self) -> LoadedPrograms:
        if self._programs is None:
            raise RuntimeError("Dataplane.load() has not run")
        return self._programs

    def _blocking(self, work: Callable[[Links], Awaitable[_T]]) -> _T:
        """Run netlink work to completion from synchronous code, even inside an event loop."""

        async def with_links() -> _T:
            async with Links(self.netns) as links:
                return await work(links)

        with concurrent.futures.ThreadPoolExecutor(1, "flowlog-netlink") as executor:
            return executor.submit(asyncio.run, with_links()).result()


def _isolation_flags(rules: PodRules) -> int:
    flags = 0
    if rules.ingress.isolated_by:
        flags |= maps.ENDPOINT_INGRESS_ISOLATED
    if rules.egress.isolated_by:
        flags |= maps.ENDPOINT_EGRESS_ISOLATED
    return flags


def _rule_entries(
    rules_id: int, rules: DirectionRules
) -> Iterator[tuple[maps.RuleKey, maps.RuleValue]]:
    for prefix, entries in rules.prefixes.items():
        key = maps.RuleKey(prefixlen=maps.RULES_ID_BITS + prefix.length, rules_id=rules_id)
        key.ip[:] = prefix.address
        value = maps.RuleValue(count=len(entries))
        for slot, entry in enumerate(entries):
            value.ports[slot] = maps.PortRule(
                policy_id=entry.policy_id,
                port=entry.port,
                end_port=entry.end_port,
                protocol=entry.protocol,
            )
        yield key, value


def _version(content: Content) -> bytes:
    """What tells one version of a document from another."""
    if isinstance(content, bytes):
        return content
    if isinstance(content, PolicyError):
        return str(content).encode()
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def _parse(content: Content, name: str) -> list[PolicyEndpoint]:
    if isinstance(content, PolicyError):
        raise content
    if isinstance(content, bytes):
        return parse_bytes(content, name)
    return [parse_document(content, name)]
