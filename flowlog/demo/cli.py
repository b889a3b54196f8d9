"""``flowlog demo``: the EKS user guide's Stars demo of network policy, end to end, on this machine.

Only the standard library and ``flowlog.config`` are imported here: the
container image has no moto and imports every subcommand for ``--version``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from flowlog.config import ConfigError

DEFAULT_QUERIES = ("top-denied-sources", "deny-share-by-namespace")
INTERRUPTED_STATUS = 130
AGENT_LINES_SHOWN = 5
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

DESCRIPTION = """\
Run the Stars demo from the EKS user guide on this machine: a node and the
management-ui, client, frontend and backend pods in network namespaces, a local
CloudWatch Logs endpoint (moto_server), and the flowlog agent with
enablePolicyEventLogs and enableCloudWatchLogs on. The guide's NetworkPolicies are
applied step by step as PolicyEndpoints; after each step every pod probes the
others and the demo prints what was allowed and denied and the flow-log lines it
caused. Then it shows the flow log, the events that arrived in CloudWatch, and
saved Insights queries run on the local file. Everything it creates is removed at
the end, and on Ctrl-C or SIGTERM. Needs root."""

EPILOG = f"""\
examples:
  sudo flowlog demo                           # straight through, in well under a minute
  sudo flowlog demo --step-pause 5            # time to talk between the steps
  sudo flowlog demo --keep ./stars-demo       # keep the flow log and the PolicyEndpoints
  flowlog query --local ./stars-demo/network-policy-agent.log denied-flows
  sudo flowlog demo --query denies-by-port --query denied-flows
  sudo flowlog demo --json | jq '.steps[] | {{step, ok}}'

steps (the guide's):
  1  no policies: every pod reaches every other
  2  default-deny in stars and client: nothing reaches client, frontend or backend
  3  allow-ui in stars and client: the UI reaches them again; they still cannot talk
  4  backend-policy: the backend accepts the frontend on TCP 6379
  5  frontend-policy: the frontend accepts the client namespace on TCP 80

exit status:
  0    every step matched the guide and CloudWatch received every flow-log line
  1    something differed (each difference is printed) or could not be set up
  2    a bad flag, or a missing prerequisite (not root, no BPF filesystem, no moto)
  {INTERRUPTED_STATUS}  interrupted (after cleaning up)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the EKS guide's Stars network-policy demo locally, end to end (root)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="write the flow log, the PolicyEndpoints and the agent's output to DIR (new or "
        "empty) and keep them; by default they go to a temporary directory that is removed",
    )
    parser.add_argument(
        "--step-pause",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long between the steps (default 0: straight through)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object summing up every step on stdout at the end; the story "
        "goes to stderr",
    )
    parser.add_argument(
        "--query",
        action="append",
        metavar="NAME",
        help="saved Insights query (one without parameters) to run on the flow log at the end; "
        "repeat for several "
        f"(default: {' and '.join(DEFAULT_QUERIES)}; see flowlog query --list)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    keep_dir = _check_arguments(args)
    _check_prerequisites()
    # Imported here: they need the packages the checks above looked for.
    import orjson

    from flowlog.demo.report import Printer, summary, use_color
    from flowlog.demo.stage import Interrupted, Stage, StageError
    from flowlog.demo.walkthrough import Outcome, Walkthrough

    stream = sys.stderr if args.json else sys.stdout
    status = 1
    failure = ""
    with InterruptGuard(stream) as guard:
        printer = Printer(stream, use_color(stream), on_reader_gone=guard.stop_requested.set)
        stage = Stage(keep_dir, guard.stop_requested)
        walkthrough = None
        try:
            walkthrough = Walkthrough(
                stage, printer, args.step_pause, args.query or DEFAULT_QUERIES
            )
            outcome = walkthrough.run()
            printer.verdict(outcome)
            status = 1 if outcome.problems else 0
        except (Interrupted, KeyboardInterrupt):
            status = INTERRUPTED_STATUS
        except StageError as error:
            failure = str(error)
            printer.problem(failure)
            tail = stage.agent_output_tail(AGENT_LINES_SHOWN) if stage.agent else ""
            if tail:
                printer.say(f"the agent's last lines:\n{tail}")
        finally:
            guard.cleaning = True
            if status == INTERRUPTED_STATUS:
                printer.problem("interrupted: cleaning up")
            stage.close()
    printer.cleaned_up(stage)
    outcome = walkthrough.outcome if walkthrough else Outcome()
    if failure:
        outcome.problems.append(failure)
    if status == INTERRUPTED_STATUS:
        outcome.problems.append("interrupted")
    if args.json:
        sys.stdout.write(orjson.dumps(summary(outcome, stage)).decode() + "\n")
    if status == 1:
        more = f" (and {len(outcome.problems) - 1} more above)" if len(outcome.problems) > 1 else ""
        print(f"flowlog demo: failed: {outcome.problems[0]}{more}", file=sys.stderr)
    return status


def _check_arguments(args: argparse.Namespace) -> Path | None:
    if args.step_pause < 0:
        raise ConfigError(f"--step-pause: expected 0 or more seconds, got {args.step_pause:g}")
    from flowlog.insights.saved import find_saved_query

    for name in args.query or DEFAULT_QUERIES:
        saved = find_saved_query(name)
        if saved is None:
            raise ConfigError(f"--query {name}: no saved query of that name (flowlog query --list)")
        if saved.parameters:
            raise ConfigError(
                f"--query {name}: needs --param values; run it on a kept flow log with "
                f"flowlog query --local FILE {name} --param ..."
            )
    if args.keep is None:
        return None
    keep_dir = Path(args.keep).absolute()
    if keep_dir.exists() and (not keep_dir.is_dir() or any(keep_dir.iterdir())):
        raise ConfigError(f"--keep {args.keep}: exists and is not an empty directory")
    return keep_dir


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise ConfigError(
            "demo: needs root, to create network namespaces and load eBPF programs "
            "(sudo flowlog demo, or sudo make demo)"
        )
    for module, package in (("bcc", "Debian's python3-bpfcc"), ("moto", "moto[server]")):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"demo: needs {package} (make setup installs it)")
    if shutil.which("nsenter") is None:
        raise ConfigError("demo: needs nsenter (util-linux)")
    from flowlog.dataplane.programs import check_bpf_filesystem
    from flowlog.demo.stage import BPF_FS

    check_bpf_filesystem(BPF_FS)


class InterruptGuard:
    """SIGINT and SIGTERM (and SIGHUP, unless ignored) ask the demo to stop: a flag it
    checks at safe points, so that nothing is cut off halfway (a lock held, a
    namespace half made). Signals during the cleanup are only acknowledged, so a
    second Ctrl-C cannot cut it short and leave namespaces or pins behind."""

    def __init__(self, stream: TextIO) -> None:
        self.stop_requested = threading.Event()
        self.cleaning = False
        self._fd = stream.fileno()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptGuard:
        for signum in SIGNALS:
            if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # started with nohup
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.cleaning or self.stop_requested.is_set():
            # os.write: the main thread may be halfway through a buffered write.
            name = signal.Signals(signum).name
            os.write(self._fd, f"flowlog demo: {name}: already stopping, cleaning up\n".encode())
        self.stop_requested.set()

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
