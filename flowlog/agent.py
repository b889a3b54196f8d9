"""``flowlog agent``: the node agent.

It reads top to bottom as its lifecycle: ``startup()`` (probes, flow log,
the cluster view, event source, shipper, watchers), ``main_loop()`` (until SIGTERM/SIGINT),
``shutdown()`` (drain the ring buffer, close the file, let the shipper finish
its calls and write its checkpoint, detach the programs). A second signal
exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import watchfiles

from flowlog import bpf_syscall, config, metrics
from flowlog.cluster import ClusterView
from flowlog.config import ConfigError, Settings
from flowlog.flows import metrics as flow_metrics
from flowlog.flows.table import FlowTable
from flowlog.format import Attribution
from flowlog.logfile import LineSink
from flowlog.pipeline import Pipeline
from flowlog.probes import ProbeServer
from flowlog.records import LAYOUTS
from flowlog.sinks import Shipper, open_sink
from flowlog.sources.ringbuf import RingBuffer, RingBufferSource

log = logging.getLogger("flowlog.agent")

# Settings the agent takes up while running; the others need a restart.
LIVE_SETTINGS = (
    "enable_policy_event_logs",
    "enable_cloudwatch_logs",
    "flow_log_verdicts",
    "flow_log_aggregate",
    "flow_log_aggregate_by",
)
SUMMARY_TICK_SECONDS = 1.0
LOST_EVENTS_POLL_SECONDS = 1.0
DRAIN_SECONDS = 3.0
LOST_EVENTS_REMINDER_SECONDS = 60.0

EPILOG = """\
examples:
  # enforce the PolicyEndpoints in a directory and log every verdict
  flowlog agent --enable-policy-event-logs --policy-dir /etc/flowlog/policies

  # ... and ship the flow log to CloudWatch Logs (/aws/eks/prod/cluster)
  flowlog agent --enable-policy-event-logs --enable-cloudwatch-logs --cluster-name prod \\
      --policy-dir /etc/flowlog/policies

  # beside the AWS network policy agent: export its verdicts, load nothing
  flowlog agent --ringbuf-pin /sys/fs/bpf/globals/aws/maps/global_policy_events \\
      --enable-policy-event-logs

  # settings from the EKS add-on configuration values, reloaded when they change
  flowlog agent --config /etc/flowlog/config.json

signals: SIGTERM or SIGINT drains, flushes and exits 0 (within 10 s); a second one exits at once.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "agent",
        help="run the node agent",
        description="Turn network-policy verdicts into flow-log lines, and ship them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = config.load_settings(args)
    config.validate_agent_settings(settings)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(Agent(settings, args).serve())
    except (StartupError, OSError) as error:
        # Missing privileges, no BPF filesystem, ports in use: one line, not a traceback.
        log.error("%s", error)
        return 1


class StartupError(RuntimeError):
    """The agent cannot start for a reason outside its configuration."""


class Agent:
    def __init__(
        self,
        settings: Settings,
        args: argparse.Namespace | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self._args = args
        self._environ = environ
        self._should_exit = asyncio.Event()
        self._exit_status = 0
        self._ready = False
        self._tasks: list[asyncio.Task] = []
        self.cluster: ClusterView | None = None
        self.dataplane: Any = None
        self.flows: FlowTable | None = None
        self.shipper: Shipper | None = None
        self.ring: RingBuffer | None = None
        self.source: RingBufferSource | None = None
        self.sink: LineSink | None = None
        self.pipeline: Pipeline | None = None
        self.probes: ProbeServer | None = None
        self._lost_total = 0

    async def serve(self) -> int:
        self._install_signal_handlers()
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()
        return self._exit_status

    # --- startup ------------------------------------------------------------

    async def startup(self) -> None:
        settings = self.settings
        for warning in config.check_agent_settings(settings):
            log.warning("%s", warning)
        self.probes = ProbeServer(
            settings.metrics_bind_addr, settings.health_probe_bind_addr, self.readiness
        )
        await self.probes.start()
        self.sink = open_sink(settings, before_delete=self._before_delete)
        enforce_from_api = not settings.policy_dir and not settings.ringbuf_pin
        self.cluster = ClusterView(settings, enforce_from_api)
        log.info("%s", self.cluster.describe())
        attribution = self._open_source()
        self.pipeline = Pipeline(
            settings,
            self.sink,
            attribution,
            on_written=self._wake_shipper,
            peers=self.cluster.peers,
        )
        if settings.shipping:
            self.shipper = Shipper(settings)
        self._start(self._consume(), "consume")
        self._start(self.cluster.run(), "cluster")
        self._start(self._close_windows(), "summaries")
        if self.dataplane is not None:
            self._start(self.dataplane.run(), "dataplane")
            self._start(self._watch_lost_events(), "lost-events")
            self._start(self._end_idle_flows(), "flows")
        if settings.config:
            self._start(self._watch_config(), "config")
        self._ready = True
        log.info(
            "started: source %s, flow log %s (%s), CloudWatch %s",
            settings.ringbuf_pin or "flowlog's programs",
            settings.log_file,
            "on" if settings.enable_policy_event_logs else "off",
            f"{settings.cloudwatch_log_group} / {settings.cloudwatch_log_stream}"
            if settings.shipping
            else "off",
        )

    def _open_source(self) -> Attribution | None:
        settings = self.settings
        if settings.ringbuf_pin:
            self.ring = open_pinned_ringbuf(settings.ringbuf_pin, settings.pinned_ringbuf_layout)
            attribution = None
        else:
            from flowlog.dataplane import Dataplane
            from flowlog.dataplane.privileges import missing_to_load_programs

            if problem := missing_to_load_programs():
                raise StartupError(problem)
            assert self.cluster
            dataplane = Dataplane(
                settings,
                policies=self.cluster.policies,
                on_policies=self.cluster.policies_in_force,
            )
            try:
                dataplane.load()
            except ConfigError:
                raise
            except Exception as error:
                raise StartupError(
                    f"cannot load the eBPF programs: {error} (the agent needs root with "
                    "CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, a mounted /sys/fs/bpf, and kernel "
                    "headers at /lib/modules/$(uname -r)/build)"
                ) from None
            self.dataplane = dataplane
            self.flows = FlowTable(dataplane.conntrack_fd, settings.flow_idle_timeouts)
            self.dataplane.set_event_logging(settings.enable_policy_event_logs)
            self.ring = RingBuffer(
                self.dataplane.ringbuf_fd, self.dataplane.ringbuf_size, LAYOUTS["flowlog"]
            )
            attribution = self.dataplane.attribution
        self.source = RingBufferSource(self.ring)
        return attribution

    def _start(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled() or self._should_exit.is_set():
            return
        error = task.exception()
        if error is not None or task.get_name() == "consume":
            log.error("%s stopped unexpectedly: %r; exiting", task.get_name(), error)
            self._exit_status = 1
            self._should_exit.set()

    # --- running ------------------------------------------------------------

    async def main_loop(self) -> None:
        await self._should_exit.wait()

    async def _consume(self) -> None:
        assert self.source and self.pipeline
        async for batch in self.source.batches():
            self.pipeline.process(batch)

    def _wake_shipper(self) -> None:
        if self.shipper:
            self.shipper.wake()

    def _before_delete(self, path: Path) -> None:
        if self.shipper:
            self.shipper.before_delete(path)

    async def _watch_lost_events(self) -> None:
        """Events the kernel could not queue: a metric always, a log line per episode."""
        loop = asyncio.get_running_loop()
        last_report = -LOST_EVENTS_REMINDER_SECONDS
        reported_total = 0
        while True:
            self.count_lost_events()
            if self._lost_total > reported_total and (
                loop.time() - last_report >= LOST_EVENTS_REMINDER_SECONDS or reported_total == 0
            ):
                log.warning(
                    "%d verdict events lost so far because the ring buffer was full "
                    "(flowlog_ringbuf_lost_events_total); raise --ringbuf-size if this grows",
                    self._lost_total,
                )
                reported_total = self._lost_total
                last_report = loop.time()
            await asyncio.sleep(LOST_EVENTS_POLL_SECONDS)

    async def _close_windows(self) -> None:
        """Summaries (--flow-log-aggregate) are written as their window ends."""
        assert self.pipeline
        while True:
            await asyncio.sleep(SUMMARY_TICK_SECONDS)
            self.pipeline.tick()

    async def _end_idle_flows(self) -> None:
        """Flows that went idle end here (closed ones the programs report themselves)."""
        assert self.pipeline and self.flows
        while True:
            await asyncio.sleep(self.flows.scan_seconds)
            self.pipeline.process(self.flows.expire())
            flow_metrics.CONNTRACK_ENTRIES.set(self.flows.entries)
            flow_metrics.SCAN_SECONDS.inc(self.flows.scan_cpu_seconds)

    def count_lost_events(self) -> None:
        total = self.dataplane.lost_events()
        if total > self._lost_total:
            metrics.RINGBUF_LOST.inc(total - self._lost_total)
            self._lost_total = total

    # --- configuration file ---------------------------------------------------

    async def _watch_config(self) -> None:
        path = Path(self.settings.config).absolute()
        # Kubernetes updates a mounted ConfigMap by swapping a symlink in its
        # directory, so the directory is watched, not the file.
        async for _ in watchfiles.awatch(path.parent, stop_event=self._should_exit, debounce=200):
            self.reload_config()

    def reload_config(self) -> None:
        try:
            new = config.load_settings(self._args, self._environ, self.settings.config)
            config.validate_agent_settings(new)
        except ConfigError as error:
            metrics.CONFIG_RELOADS.labels(result="rejected").inc()
            log.error("configuration not reloaded, the previous one stays in force: %s", error)
            return
        changed = [
            field.name
            for field in dataclasses.fields(Settings)
            if getattr(new, field.name) != getattr(self.settings, field.name)
        ]
        if not changed:
            return
        metrics.CONFIG_RELOADS.labels(result="applied").inc()
        for name in changed:
            if name not in LIVE_SETTINGS:
                log.warning("%s changed; it takes effect after a restart", _key(name))
        live = {name: getattr(new, name) for name in changed if name in LIVE_SETTINGS}
        if live:
            self.apply_live(self.settings.replace(**live))

    def apply_live(self, settings: Settings) -> None:
        old, self.settings = self.settings, settings
        for warning in config.check_agent_settings(settings):
            log.warning("%s", warning)
        if self.dataplane is not None:
            self.dataplane.set_event_logging(settings.enable_policy_event_logs)
        assert self.pipeline
        self.pipeline.apply(settings)
        if settings.shipping and not self.shipper:
            self.shipper = Shipper(settings)
        elif self.shipper and not settings.shipping:
            shipper, self.shipper = self.shipper, None
            self._start(shipper.stop(), "cloudwatch-stop")
        log.info(
            "settings applied: %s",
            ", ".join(
                f"{_key(name)}={_value(getattr(settings, name))}"
                for name in LIVE_SETTINGS
                if getattr(old, name) != getattr(settings, name)
            ),
        )

    # --- probes -------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {
            "source": self.settings.ringbuf_pin or "flowlog programs",
            "enablePolicyEventLogs": self.settings.enable_policy_event_logs,
            "enableCloudWatchLogs": self.settings.enable_cloudwatch_logs,
            "cloudwatch": {
                "shipping": self.shipper is not None,
                "problem": self.shipper.problem if self.shipper else None,
            },
        }
        ready = self._ready
        if self.cluster is not None:
            # Not ready until every kind the agent watches has been listed once.
            cluster_ready, detail["cluster"] = self.cluster.readiness()
            ready = ready and cluster_ready
        if self.dataplane is not None:
            detail["dataplane"] = self.dataplane.status()
            detail["ringbufLostEvents"] = self._lost_total
        return ready, detail

    # --- shutdown -----------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._handle_exit, signum)

    def _handle_exit(self, signum: int) -> None:
        if self._should_exit.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s: draining and stopping", signal.Signals(signum).name)
        self._should_exit.set()

    async def shutdown(self) -> None:
        self._ready = False
        self._should_exit.set()
        consume = next((t for t in self._tasks if t.get_name() == "consume"), None)
        if self.source:
            self.source.stop()
        if consume:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(consume, DRAIN_SECONDS)
        for task in self._tasks:
            if task.get_name() != "cloudwatch-stop":
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.dataplane is not None:
            self.count_lost_events()
            if self.pipeline and self.flows and not self.settings.keep_programs:
                # The programs go with us: every flow still open ends now.
                self.pipeline.process(self.flows.end_all())
        if self.pipeline:
            self.pipeline.close()  # the open window's summaries
        if self.sink:
            self.sink.close()
        if self.shipper:
            await self.shipper.stop()
        if self.dataplane is not None:
            self.dataplane.close()
        if self.ring:
            self.ring.close()
        if self.probes:
            await self.probes.stop()
        log.info("stopped")


def open_pinned_ringbuf(path: str, layout_name: str) -> RingBuffer:
    """Another agent's ring buffer, pinned in the BPF filesystem."""
    try:
        fd = bpf_syscall.obj_get(path)
    except OSError as error:
        raise ConfigError(f"--ringbuf-pin {path}: cannot open: {error.strerror}") from None
    info = bpf_syscall.map_info(fd)
    if info.type != bpf_syscall.BPF_MAP_TYPE_RINGBUF:
        os.close(fd)
        raise ConfigError(f"--ringbuf-pin {path}: map {info.name!r} is not a ring buffer")
    return RingBuffer(fd, info.max_entries, LAYOUTS[layout_name])


def _key(name: str) -> str:
    option = config.OPTIONS_BY_NAME.get(name)
    return f"nodeAgent.{option.config_key}" if option and option.config_key else name


def _value(value: object) -> str:
    if isinstance(value, frozenset):
        return ",".join(sorted(value))
    return str(value).lower() if isinstance(value, bool) else str(value)
