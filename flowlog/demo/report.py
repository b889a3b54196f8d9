"""What the demo prints: the story in plain words, each step's matrix, the flow log,
CloudWatch's copy, the Insights results, and a JSON summary for scripts.

Colour only when the stream is a terminal and ``NO_COLOR`` is unset.
"""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from flowlog.demo.stage import SETTINGS, Stage
from flowlog.demo.stars import (
    PROBES,
    SERVICES,
    NetworkPolicy,
    PodAddresses,
    Step,
    policy_endpoint,
)

if TYPE_CHECKING:
    from flowlog.demo.local_cloudwatch import LocalCloudWatch
    from flowlog.demo.walkthrough import Outcome, QueryResult, StepResult

WIDTH = 100
COLUMN_GAP = "  "
INDENT = "  "
NOT_PROBED = "-"
RAW_LINES_SHOWN = 2
CLOUDWATCH_MESSAGES_SHOWN = 2
ANSI = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
EXCERPT_COLUMNS = ("TIME", "VERDICT", "DIR", "SOURCE", "DESTINATION", "POD", "NAMESPACE", "POLICY")


def use_color(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


class Style:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *names: str) -> str:
        if not self.enabled or not names:
            return text
        codes = ";".join(ANSI[name] for name in names)
        return f"\x1b[{codes}m{text}\x1b[0m"


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], style: Style) -> list[str]:
    """Padded columns; a cell may carry style names as (text, names...)."""
    texts = [[cell if isinstance(cell, str) else cell[0] for cell in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in texts)]) for i, c in enumerate(columns)]

    def render(cells: Sequence[Any]) -> str:
        parts = []
        for cell, width in zip(cells, widths, strict=True):
            text, names = (cell, ()) if isinstance(cell, str) else (cell[0], cell[1:])
            parts.append(style(text.ljust(width), *names))
        return COLUMN_GAP.join(parts).rstrip()

    return [render([(c, "bold") for c in columns]), *(render(row) for row in rows)]


def describe_endpoint(document: Mapping[str, Any]) -> str:
    """A PolicyEndpoint in one line: whom it selects and what it lets in."""
    spec = document["spec"]
    selected = ", ".join(pod["name"] for pod in spec["podSelectorEndpoints"])
    allowed_in: dict[str, list[str]] = {}
    for rule in spec.get("ingress", []):
        ports = rule.get("ports", [])
        where = ", ".join(f"{p['protocol']} {p['port']}" for p in ports) or "every port"
        allowed_in.setdefault(where, []).append(rule["cidr"])
    if not allowed_in:
        return f"selects {selected}; lets nothing in"
    lets_in = "; ".join(f"{', '.join(cidrs)} on {where}" for where, cidrs in allowed_in.items())
    return f"selects {selected}; lets in {lets_in}"


def line_summary(line: Mapping[str, Any]) -> str:
    """Why a line was written, for the per-step digest."""
    if line.get("Policy"):
        return f"by {line['Policy']}"
    return "no policy (egress is not isolated)" if line["Tier"] == "DEFAULT" else "no policy"


class Printer:
    def __init__(self, stream: TextIO, color: bool, on_reader_gone: Callable[[], None]) -> None:
        self.stream = stream
        self.style = Style(color)
        self.on_reader_gone = on_reader_gone

    def say(self, text: str = "") -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except BrokenPipeError:
            # The reader (head, less) has gone: nobody is watching, so stop and clean up.
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            self.on_reader_gone()

    def paragraph(self, text: str, *styles: str) -> None:
        """``text`` indented and wrapped to the width of a terminal, continued lines further."""
        wrapped = textwrap.wrap(text, WIDTH, initial_indent=INDENT, subsequent_indent=INDENT * 2)
        for line in wrapped:
            self.say(self.style(line, *styles))

    def heading(self, text: str) -> None:
        self.say()
        self.say(self.style(text, "bold", "cyan"))

    # --- setting up --------------------------------------------------------------------

    def intro(self) -> None:
        self.say(self.style("flowlog demo: the Stars demo of network policy", "bold"))
        self.say(
            "From the EKS user guide: a node and four pods in network namespaces, the flowlog\n"
            "agent enforcing the guide's NetworkPolicies (as PolicyEndpoints) and writing a\n"
            "flow log that it ships to a local CloudWatch Logs endpoint."
        )

    def node(self, stage: Stage) -> None:
        self.heading(f"Node {SETTINGS.node_name}")
        assert stage.topology is not None
        self.say(f"{INDENT}network namespace {stage.topology.node.name}, with these pods:")
        rows = [
            [
                service.pod,
                service.namespace,
                stage.pods[service.name].ipv4,
                stage.pods[service.name].ipv6,
                f"TCP {service.port}",
            ]
            for service in SERVICES
        ]
        for text in table(["POD", "NAMESPACE", "IPV4", "IPV6", "SERVES"], rows, self.style):
            self.say(INDENT + text)
        if stage.kube is not None:
            self.say(
                f"{INDENT}Kubernetes API (a stand-in speaking its wire protocol) at "
                f"{stage.kube.url}, serving these pods; PolicyEndpoints arrive there step by step"
            )

    def cloudwatch_started(self, cloudwatch: LocalCloudWatch) -> None:
        pid = cloudwatch.process.pid if cloudwatch.process else "?"
        self.say(
            f"{INDENT}local CloudWatch Logs: moto_server (pid {pid}) at {cloudwatch.endpoint} "
            "on the node's loopback"
        )

    def agent_ready(self, stage: Stage, pid: int, seconds: float) -> None:
        self.say(
            f"{INDENT}agent ready (pid {pid}) after {seconds:.1f}s: flowlog agent "
            "--enable-policy-event-logs --enable-cloudwatch-logs"
        )
        self.say(f"{INDENT}{INDENT}flow log   {stage.log_file}")
        kube = stage.kube.url if stage.kube else "?"
        self.say(
            f"{INDENT}{INDENT}cluster    pods and PolicyEndpoints from the Kubernetes API at "
            f"{kube} (in-cluster: a service account token); copies in {stage.policy_dir}/"
        )
        self.say(
            f"{INDENT}{INDENT}shipping   {SETTINGS.cloudwatch_log_group} / "
            f"{SETTINGS.cloudwatch_log_stream}"
        )
        self.say(f"{INDENT}{INDENT}its output {stage.agent_output}")

    # --- the steps ----------------------------------------------------------------------

    def step_start(
        self, number: int, total: int, step: Step, addresses: Mapping[str, PodAddresses]
    ) -> None:
        self.heading(f"Step {number} of {total}: {step.title}")
        self.paragraph(f'The guide: "{step.guide_says}"', "dim")
        policies: Sequence[NetworkPolicy] = step.applies
        if not policies:
            self.say(f"{INDENT}No policy is applied: no pod is selected, nothing is judged.")
        for policy in policies:
            self.paragraph(
                f"Applying {policy.describe()}: "
                f"{describe_endpoint(policy_endpoint(policy, addresses))}"
            )

    def step(self, result: StepResult, total: int) -> None:
        style = self.style
        targets = list(dict.fromkeys(probe.target for probe in PROBES))
        sources = list(dict.fromkeys(probe.source for probe in PROBES))
        by_pair = {(r.probe.source.name, r.probe.target.name): r for r in result.probes}
        rows = []
        for source in sources:
            row: list[Any] = [source.name]
            for target in targets:
                probe_result = by_pair.get((source.name, target.name))
                if probe_result is None:
                    row.append((NOT_PROBED, "dim"))
                    continue
                text = "allowed" if probe_result.connected else "denied"
                names = ("green",) if probe_result.connected else ("red",)
                if probe_result.problem():
                    text, names = f"{text} (!)", ("yellow", "bold")
                row.append((text, *names))
            rows.append(row)
        columns = ["from \\ to", *(f"{t.name}:{t.port}" for t in targets)]
        self.say()
        for text in table(columns, rows, style):
            self.say(INDENT + text)
        self._step_lines(result.lines)
        problems = result.problems()
        if problems:
            for problem in problems:
                self.say(style(f"{INDENT}DIFFERS: {problem}", "yellow", "bold"))
        else:
            self.say(style(f"{INDENT}As the guide says.", "green"))

    def _step_lines(self, lines: Sequence[Mapping[str, Any]]) -> None:
        if not lines:
            self.say(f"{INDENT}Flow log: no new lines (pods no policy selects are not judged).")
            return
        self.say(f"{INDENT}Flow log: {len(lines)} new lines")
        groups: dict[tuple[str, str, str], list[str]] = {}
        for line in lines:
            key = (line["Verdict"], line["Direction"], line_summary(line))
            groups.setdefault(key, []).append(line.get("Pod", "?"))
        order = {service.pod: index for index, service in enumerate(SERVICES)}
        rows = [
            [
                f"{len(pods):>3} x",
                (verdict, "red" if verdict == "DENY" else "green"),
                direction,
                why,
                "at " + ", ".join(sorted(set(pods), key=lambda pod: order.get(pod, len(order)))),
            ]
            for (verdict, direction, why), pods in sorted(groups.items())
        ]
        for text in table([""] * 5, rows, self.style)[1:]:
            self.say(INDENT * 2 + text)

    # --- reading back -------------------------------------------------------------------

    def flow_log(self, path: Path, lines: Sequence[Mapping[str, Any]]) -> None:
        self.heading(f"The flow log: {path}")
        verdicts = Counter(line["Verdict"] for line in lines)
        named = sum(1 for line in lines if line["Verdict"] == "ACCEPT" and line.get("Policy"))
        self.paragraph(
            f"{len(lines)} lines: {verdicts['DENY']} DENY, {verdicts['ACCEPT']} ACCEPT "
            f"({named} allowed by a policy, the others leaving pods whose policies isolate "
            f"only ingress), {verdicts['EXPIRED/DELETED']} EXPIRED/DELETED (each closed "
            "connection's end, with the packets and bytes it carried both ways)"
        )
        if not lines:
            return
        self.say(f"{INDENT}As written (one JSON object per line):")
        shown = _first_of_each(lines, _verdict_naming_policy)[:RAW_LINES_SHOWN]
        for line in shown:
            self.say(INDENT * 2 + orjson.dumps(line).decode())
        excerpt = [
            line
            for line in lines
            if line["Verdict"] == "DENY" or line in _first_of_each(lines, _accept_kind)
        ]
        self.say(
            f"{INDENT}Every DENY line, and the first ACCEPT line of each kind "
            f"({len(excerpt)} of {len(lines)}):"
        )
        rows = [_excerpt_row(line) for line in excerpt]
        for text in table(EXCERPT_COLUMNS, rows, self.style):
            self.say(INDENT * 2 + text)

    def cloudwatch(self, events: Sequence[Mapping[str, Any]], written: int) -> None:
        self.heading(
            f"CloudWatch Logs: {SETTINGS.cloudwatch_log_group} / {SETTINGS.cloudwatch_log_stream}"
        )
        verdict = "every line" if len(events) == written else f"but the flow log has {written}"
        color = "green" if len(events) == written else "yellow"
        self.say(self.style(f"{INDENT}{len(events)} events arrived: {verdict}.", color))
        denied = [e for e in events if '"Verdict":"DENY"' in e["message"]]
        accepted = [e for e in events if '"Policy"' in e["message"] and e not in denied]
        for event in (denied[:1] + accepted[:1])[:CLOUDWATCH_MESSAGES_SHOWN]:
            stamp = orjson.loads(event["message"]).get("timestamp")
            self.say(f"{INDENT}timestamp {event['timestamp']} ({stamp}), message:")
            self.say(INDENT * 2 + event["message"])

    def query(self, result: QueryResult, log_file: Path, pods: Mapping[str, str]) -> None:
        """``pods`` names the pod behind each address, for results that show addresses."""
        self.heading(f"Logs Insights, run locally: flowlog query --local {log_file} {result.name}")
        self.say(self.style(f"{INDENT}{result.description}", "dim"))
        if not result.rows:
            self.say(f"{INDENT}(no rows)")
            return
        rows = [[row.get(column, "") for column in result.columns] for row in result.rows]
        for text in table(result.columns, rows, self.style):
            self.say(INDENT + text)
        shown = {cell for row in rows for cell in row}
        legend = [f"{address} is {pod}" for address, pod in pods.items() if address in shown]
        if legend:
            self.paragraph(f"({', '.join(legend)})", "dim")

    # --- the end ------------------------------------------------------------------------

    def verdict(self, outcome: Outcome) -> None:
        self.say()
        if outcome.problems:
            self.say(self.style("The demo differs from the guide:", "yellow", "bold"))
            for problem in outcome.problems:
                self.say(f"{INDENT}{problem}")
        else:
            self.say(
                self.style(
                    f"Every step matched the guide, and CloudWatch holds every line "
                    f"({outcome.seconds:.1f}s).",
                    "green",
                    "bold",
                )
            )

    def cleaned_up(self, stage: Stage) -> None:
        self.heading("Cleaned up")
        self.say(
            f"{INDENT}Stopped the agent and moto_server, deleted the namespaces and the pins "
            f"under {stage.pin_dir.parent}."
        )
        if not stage.keep_work_dir:
            self.say(f"{INDENT}Removed {stage.work_dir}. To keep the files and look further:")
            self.say(f"{INDENT * 2}flowlog demo --keep DIR")
            self.say(f"{INDENT * 2}flowlog query --local DIR/{stage.log_file.name} denied-flows")
            return
        self.say(f"{INDENT}Kept in {stage.work_dir}:")
        for path in sorted(stage.work_dir.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                self.say(f"{INDENT * 2}{path.relative_to(stage.work_dir)}")
        self.say(f"{INDENT}Look further:")
        self.say(f"{INDENT * 2}flowlog query --list")
        self.say(f"{INDENT * 2}flowlog query --local {stage.log_file} denied-flows")
        self.say(
            f"{INDENT * 2}flowlog query --local {stage.log_file} "
            "'filter Verdict = \"DENY\" | stats count(*) by Pod, Policy'"
        )

    def problem(self, text: str) -> None:
        self.say(self.style(f"flowlog demo: {text}", "yellow", "bold"))


def _verdict_naming_policy(line: Mapping[str, Any]) -> str | None:
    return line["Verdict"] if line.get("Policy") else None


def _accept_kind(line: Mapping[str, Any]) -> tuple | None:
    if line["Verdict"] != "ACCEPT":
        return None
    return (line["Direction"], line.get("Policy"), line.get("Policy Namespace"))


def _first_of_each(lines: Sequence[Mapping[str, Any]], kind: Any) -> list[Mapping[str, Any]]:
    first: dict[Any, Mapping[str, Any]] = {}
    for line in lines:
        key = kind(line)
        if key is not None:
            first.setdefault(key, line)
    return list(first.values())


def _excerpt_row(line: Mapping[str, Any]) -> list[Any]:
    color = "red" if line["Verdict"] == "DENY" else "green"
    return [
        line["timestamp"][11:23],
        (line["Verdict"], color),
        line["Direction"],
        f"{line['Src IP']}:{line['Src Port']}",
        f"{line['Dest IP']}:{line['Dest Port']}",
        line.get("Pod", ""),
        line.get("Namespace", ""),
        line.get("Policy", ""),
    ]


# --- the JSON summary -----------------------------------------------------------------


def summary(outcome: Outcome, stage: Stage) -> dict[str, Any]:
    """Everything a script needs to check the run, in one object."""
    lines = outcome.flow_log
    return {
        "ok": not outcome.problems,
        "problems": outcome.problems,
        "seconds": round(outcome.seconds, 1),
        "steps": [
            {
                "step": result.number,
                "title": result.step.title,
                "applied": [
                    {"policy": policy.name, "namespace": policy.namespace}
                    for policy in result.step.applies
                ],
                "policy_files": [str(path) for path in result.policy_files],
                "probes": [
                    {
                        "from": r.probe.source.name,
                        "to": r.probe.target.name,
                        "port": r.probe.port,
                        "source_port": r.source_port,
                        "connected": r.connected,
                        "expected": r.expected,
                        "flow_log_verdict": r.logged["Verdict"] if r.logged else None,
                        "flow_log_policy": r.logged.get("Policy") if r.logged else None,
                    }
                    for r in result.probes
                ],
                "flow_log_lines": len(result.lines),
                "ok": not result.problems(),
            }
            for result in outcome.steps
        ],
        "flow_log": {
            "path": str(stage.log_file),
            "lines": len(lines),
            "verdicts": dict(Counter(line["Verdict"] for line in lines)),
            "pods": sorted({line["Pod"] for line in lines if "Pod" in line}),
            "policies": sorted(
                {
                    f"{line['Policy Namespace']}/{line['Policy']}"
                    for line in lines
                    if "Policy" in line
                }
            ),
        },
        "cloudwatch": {
            "endpoint": stage.cloudwatch.endpoint if stage.cloudwatch else None,
            "log_group": SETTINGS.cloudwatch_log_group,
            "log_stream": SETTINGS.cloudwatch_log_stream,
            "events": len(outcome.cloudwatch_events),
        },
        "insights": [
            {"query": q.name, "columns": q.columns, "rows": q.rows} for q in outcome.queries
        ],
        "work_dir": str(stage.work_dir),
        "kept": stage.keep_work_dir,
        # What the demo created and removed again, for scripts that check it is gone.
        "created": {
            "namespaces": [namespace.name for namespace in stage.namespaces()],
            "pin_dir": str(stage.pin_dir),
            "agent_pid": stage.agent.pid if stage.agent else None,
            "cloudwatch_pid": (
                stage.cloudwatch.process.pid
                if stage.cloudwatch and stage.cloudwatch.process
                else None
            ),
        },
    }
