"""The demo's story: bring the stage up, walk the EKS guide's steps, then read it all back.

Each step applies its policies, probes every path once, and checks two things
against the guide: which connections went through, and that the flow log holds
the matching verdict (ACCEPT or DENY) for every probe into a pod some policy
selects. At the end every flow-log line must have arrived in CloudWatch, and
the saved Insights queries run on the local file.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowlog.demo.report import Printer
from flowlog.demo.stage import Interrupted, Stage, StageError
from flowlog.demo.stars import (
    PROBES,
    STEPS,
    NetworkPolicy,
    Probe,
    Step,
    allowed,
    isolated,
)

# Step n's probes leave from ports SOURCE_PORT_BASE + 100 n + i: easy to find in the log.
SOURCE_PORT_BASE = 41000
FLOW_LOG_SECONDS = 10.0
CLOUDWATCH_SECONDS = 30.0


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    source_port: int
    expected: bool  # the guide's verdict
    connected: bool
    judged: bool  # the target is selected by a policy, so its veth writes a verdict
    logged: dict | None  # that verdict's flow-log line

    def problem(self) -> str | None:
        what = f"{self.probe.source.name} -> {self.probe.target.name}:{self.probe.port}"
        if self.connected != self.expected:
            got, want = _word(self.connected), _word(self.expected)
            return f"{what} was {got}; the guide expects {want}"
        if not self.judged:
            return None
        if self.logged is None:
            return f"{what}: no flow-log line within {FLOW_LOG_SECONDS:g}s"
        wanted = "ACCEPT" if self.expected else "DENY"
        if self.logged["Verdict"] != wanted:
            return f"{what}: the flow log says {self.logged['Verdict']}, not {wanted}"
        return None


@dataclass(frozen=True)
class StepResult:
    number: int
    step: Step
    policy_files: list[Path]
    probes: list[ProbeResult]
    lines: list[dict]  # the flow-log lines this step produced

    def problems(self) -> list[str]:
        return [f"step {self.number}: {p}" for r in self.probes if (p := r.problem())]


@dataclass(frozen=True)
class QueryResult:
    name: str
    description: str
    columns: list[str]
    rows: list[dict[str, str]]


@dataclass
class Outcome:
    steps: list[StepResult] = field(default_factory=list)
    flow_log: list[dict] = field(default_factory=list)
    cloudwatch_events: list[dict] = field(default_factory=list)
    queries: list[QueryResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _word(connected: bool) -> str:
    return "allowed" if connected else "denied"


class Walkthrough:
    """Runs the demo on ``stage``, telling ``printer`` what happens as it happens."""

    def __init__(
        self, stage: Stage, printer: Printer, step_pause: float, queries: Sequence[str]
    ) -> None:
        self.stage = stage
        self.printer = printer
        self.step_pause = step_pause
        self.query_names = list(queries)
        self.outcome = Outcome()

    def run(self) -> Outcome:
        started = time.monotonic()
        stage, printer = self.stage, self.printer
        printer.intro()
        stage.build_node()
        stage.start_kube_api()
        printer.node(stage)
        stage.check_stop()
        cloudwatch = stage.start_cloudwatch()
        printer.cloudwatch_started(cloudwatch)
        stage.check_stop()
        agent = stage.start_agent()
        agent_started = time.monotonic()
        stage.wait_agent_ready()
        printer.agent_ready(stage, agent.pid, time.monotonic() - agent_started)
        in_force: list[NetworkPolicy] = []
        for number, step in enumerate(STEPS, 1):
            if number > 1 and stage.stop_requested.wait(self.step_pause):
                raise Interrupted
            in_force.extend(step.applies)
            result = self._run_step(number, step, in_force)
            self.outcome.steps.append(result)
            self.outcome.problems.extend(result.problems())
            printer.step(result, len(STEPS))
        self._read_back()
        self.outcome.seconds = time.monotonic() - started
        return self.outcome

    def _run_step(self, number: int, step: Step, in_force: list[NetworkPolicy]) -> StepResult:
        stage = self.stage
        stage.check_stop()
        self.printer.step_start(number, len(STEPS), step, stage.addresses())
        files = stage.apply(step.applies)
        lines_before = len(stage.flow_log())
        ports = [SOURCE_PORT_BASE + 100 * number + index for index in range(len(PROBES))]
        with stage.serving():
            connected = stage.probe(PROBES, ports)
        stage.check_stop()
        judged = [isolated(in_force, probe.target) for probe in PROBES]
        logged = self._verdict_lines(ports, judged)
        probes = [
            ProbeResult(probe, port, allowed(in_force, probe), ok, is_judged, line)
            for probe, port, ok, is_judged, line in zip(
                PROBES, ports, connected, judged, logged, strict=True
            )
        ]
        return StepResult(number, step, files, probes, stage.flow_log()[lines_before:])

    def _verdict_lines(self, ports: list[int], judged: list[bool]) -> list[dict | None]:
        """Each judged probe's ingress line at its target (None if it never came)."""
        pods = self.stage.pods
        wanted = {
            (pods[probe.source.name].ipv4, port, pods[probe.target.name].ipv4, probe.port)
            for probe, port, is_judged in zip(PROBES, ports, judged, strict=True)
            if is_judged
        }
        found: dict[tuple, dict] = {}

        def all_written() -> bool:
            for line in self.stage.flow_log():
                key = (line["Src IP"], line["Src Port"], line["Dest IP"], line["Dest Port"])
                is_verdict = line["Verdict"] != "EXPIRED/DELETED"  # not the flow's end
                if key in wanted and line["Direction"] == "ingress" and is_verdict:
                    found[key] = line
            return len(found) == len(wanted)

        self.stage.wait_for(all_written, FLOW_LOG_SECONDS)  # missing lines are reported per probe
        return [
            found.get((pods[p.source.name].ipv4, port, pods[p.target.name].ipv4, p.port))
            for p, port in zip(PROBES, ports, strict=True)
        ]

    def _read_back(self) -> None:
        stage, outcome = self.stage, self.outcome
        outcome.flow_log = stage.flow_log()
        self.printer.flow_log(stage.log_file, outcome.flow_log)
        written = len(outcome.flow_log)
        # Short of the deadline, what did arrive is reported below.
        stage.wait_for(lambda: len(stage.cloudwatch_events()) >= written, CLOUDWATCH_SECONDS)
        outcome.cloudwatch_events = stage.cloudwatch_events()
        if len(outcome.cloudwatch_events) != written:
            outcome.problems.append(
                f"CloudWatch holds {len(outcome.cloudwatch_events)} events, the flow log "
                f"{written} lines"
            )
        self.printer.cloudwatch(outcome.cloudwatch_events, written)
        for name in self.query_names:
            stage.check_stop()
            result = run_local_query(name, stage.log_file)
            outcome.queries.append(result)
            self.printer.query(result, stage.log_file, self._pods_by_address())
        self._write_flow_map()

    def _write_flow_map(self) -> None:
        """The stars map, kept with the other files, or else in the temporary directory:
        the one thing the demo leaves behind, to open in a browser."""
        from flowlog.flowmap import KnownPod, write_map

        stage = self.stage
        if stage.keep_work_dir:
            output = stage.work_dir / "flow-map.html"
        else:
            output = Path(tempfile.gettempdir()) / "flowlog-stars-map.html"
        # The lines name only the pod each verdict was made for; the demo knows every address.
        known = {
            address: KnownPod(pod.namespace, pod.name)
            for pod in stage.pods.values()
            for address in (pod.ipv4, pod.ipv6)
        }
        report = write_map([stage.log_file], output, known_pods=known, title="The stars demo")
        self.printer.heading(f"The flow map: {output}")
        self.printer.paragraph(f"{report.graph.summary()}. Open it in a browser.")

    def _pods_by_address(self) -> dict[str, str]:
        names = {}
        for pod in self.stage.pods.values():
            names[pod.ipv4] = names[pod.ipv6] = pod.name
        return names


def run_local_query(name: str, log_file: Path) -> QueryResult:
    """A saved Insights query over the local flow log, as ``flowlog query --local`` runs it."""
    from flowlog.insights.evaluator import execute, plan
    from flowlog.insights.local_logs import LocalFlowLogs
    from flowlog.insights.parser import parse_query
    from flowlog.insights.saved import find_saved_query

    saved = find_saved_query(name)
    if saved is None:
        raise StageError(f"no saved query named {name}")
    query_plan = plan(parse_query(saved.render({})))
    rows = LocalFlowLogs([log_file], source_fields=query_plan.source_fields).rows()
    result = execute(query_plan, rows)
    return QueryResult(name, saved.description, result.columns, result.rows)
