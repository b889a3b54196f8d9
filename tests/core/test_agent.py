"""The agent as a process: a pinned ring buffer in, the flow log out; probes, signals, reload."""

import json
import signal
import time
import uuid
from pathlib import Path

import orjson
import pytest

from tests.core.test_records import aws_v4_record, aws_v6_record
from tests.support.agent_process import AgentProcess, wait_until

pytestmark = pytest.mark.bpf


@pytest.fixture
def pinned_ring(request):
    """A ring buffer pinned like the AWS agent's, fed by a test program."""
    from tests.support.ringbuf_producer import RecordProducer

    record_size = getattr(request, "param", 32)
    producer = RecordProducer(record_size)
    path = Path(f"/sys/fs/bpf/flowlog-test-{uuid.uuid4().hex[:8]}/global_policy_events")
    try:
        producer.pin(path)
        yield producer, path
    finally:
        producer.close()
        path.parent.rmdir()


def read_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_consumes_a_pinned_ring_buffer_and_serves_probes(pinned_ring, tmp_path):
    producer, pin = pinned_ring
    log = tmp_path / "network-policy-agent.log"
    with AgentProcess(
        "--ringbuf-pin",
        str(pin),
        "--enable-policy-event-logs",
        "--log-file",
        str(log),
        "--node-name",
        "node-a",
    ) as agent:
        detail = agent.wait_ready()
        assert detail["source"] == str(pin) and detail["enablePolicyEventLogs"] is True
        assert agent.get(agent.health_port, "/healthz") == (200, b"ok\n")
        producer.produce(aws_v4_record("10.0.0.5", 40000, "10.0.1.7", 80, 6, 0, 60, 0, 2))
        producer.produce(aws_v4_record("10.0.0.5", 40001, "10.0.1.7", 443, 6, 1, 74, 1, 2), 99)
        wait_until(lambda: len(read_lines(log)) == 100, message="100 lines")
        lines = read_lines(log)
        assert (lines[0]["Verdict"], lines[0]["Dest Port"], lines[0]["Direction"]) == (
            "DENY",
            80,
            "ingress",
        )
        assert {(line["Verdict"], line["Dest Port"]) for line in lines[1:]} == {("ACCEPT", 443)}
        assert agent.metric("network_policy_drop_count_total", direction="ingress") == 1
        assert agent.metric("network_policy_drop_bytes_total", direction="ingress") == 60
        assert agent.metric("flowlog_events_total", verdict="ACCEPT") == 99
        assert agent.metric("flowlog_lines_written_total") == 100
        started = time.monotonic()
        assert agent.stop() == 0
        assert time.monotonic() - started < 10


@pytest.mark.parametrize("pinned_ring", [56], indirect=True)
def test_ipv6_layout(pinned_ring, tmp_path):
    producer, pin = pinned_ring
    log = tmp_path / "flows.log"
    with AgentProcess(
        "--ringbuf-pin",
        str(pin),
        "--enable-ipv6",
        "--enable-policy-event-logs",
        "--log-file",
        str(log),
    ) as agent:
        agent.wait_ready()
        producer.produce(aws_v6_record("2001:db8::5", 5353, "2001:db8::9", 53, 17, 1, 90, 1, 4))
        (line,) = wait_until(lambda: read_lines(log), message="a line")
        assert (line["Src IP"], line["Dest IP"], line["Proto"], line["Tier"]) == (
            "2001:db8::5",
            "2001:db8::9",
            "UDP",
            "DEFAULT",
        )
        assert agent.stop() == 0


def test_events_queued_at_shutdown_are_written(pinned_ring, tmp_path):
    producer, pin = pinned_ring
    log = tmp_path / "flows.log"
    with AgentProcess(
        "--ringbuf-pin", str(pin), "--enable-policy-event-logs", "--log-file", str(log)
    ) as agent:
        agent.wait_ready()
        agent.signal(signal.SIGSTOP)  # the agent cannot read while we fill its queue
        producer.produce(aws_v4_record("10.0.0.1", 1, "10.0.0.2", 2, 17, 1, 60, 0, 2), 5000)
        agent.signal(signal.SIGTERM)
        agent.signal(signal.SIGCONT)
        assert agent.process.wait(10) == 0
    assert len(read_lines(log)) == 5000


def test_toggling_policy_event_logs_live_loses_and_duplicates_nothing(pinned_ring, tmp_path):
    producer, pin = pinned_ring
    config = tmp_path / "config" / "addon.json"
    config.parent.mkdir()
    log = tmp_path / "flows.log"

    def set_logging(enabled: bool) -> None:
        document = {"nodeAgent": {"enablePolicyEventLogs": str(enabled).lower()}}
        staged = config.with_suffix(".tmp")
        staged.write_text(json.dumps(document))
        staged.rename(config)

    def produce(port: int, count: int) -> None:
        producer.produce(aws_v4_record("10.0.0.1", port, "10.0.0.2", 80, 6, 1, 60, 0, 2), count)

    set_logging(True)
    with AgentProcess(
        "--ringbuf-pin", str(pin), "--config", str(config), "--log-file", str(log)
    ) as agent:
        agent.wait_ready()
        produce(1, 10)
        wait_until(lambda: len(read_lines(log)) == 10, message="first 10 lines")
        set_logging(False)
        wait_until(lambda: agent.ready()["enablePolicyEventLogs"] is False, message="reload off")
        produce(2, 20)
        wait_until(
            lambda: (
                agent.metric("flowlog_events_not_logged_total", reason="logging_disabled") == 20
            ),
            message="20 not logged",
        )
        set_logging(True)
        wait_until(lambda: agent.ready()["enablePolicyEventLogs"] is True, message="reload on")
        produce(3, 30)
        wait_until(lambda: len(read_lines(log)) == 40, message="40 lines")
        assert agent.metric("flowlog_config_reloads_total", result="applied") == 2
        # A broken file is refused; the settings in force stay.
        config.write_text('{"nodeAgent": {"enablePolicyEventLogs": "perhaps"}}')
        wait_until(
            lambda: agent.metric("flowlog_config_reloads_total", result="rejected") >= 1,
            message="rejected reload",
        )
        assert agent.ready()["enablePolicyEventLogs"] is True
        assert agent.stop() == 0
        assert "nodeAgent.enablePolicyEventLogs: expected true or false" in agent.stderr()
    ports = [line["Src Port"] for line in read_lines(log)]
    assert ports == [1] * 10 + [3] * 30


def test_cloudwatch_without_policy_event_logs_is_explained(pinned_ring, tmp_path):
    _, pin = pinned_ring
    with AgentProcess(
        "--ringbuf-pin",
        str(pin),
        "--enable-cloudwatch-logs",
        "--log-file",
        str(tmp_path / "flows.log"),
    ) as agent:
        agent.wait_ready()
        assert agent.stop() == 0
        assert (
            "enableCloudWatchLogs is on but enablePolicyEventLogs is off: nothing is shipped"
            in agent.stderr()
        )


def test_a_missing_pin_is_a_one_line_error(tmp_path):
    with AgentProcess(
        "--ringbuf-pin", "/sys/fs/bpf/no-such-map", "--log-file", str(tmp_path / "f.log")
    ) as agent:
        assert agent.process.wait(30) == 2
        assert agent.stderr().strip().splitlines()[-1] == (
            "flowlog: error: --ringbuf-pin /sys/fs/bpf/no-such-map: cannot open: "
            "No such file or directory"
        )


def test_a_configmap_update_is_picked_up(pinned_ring, tmp_path):
    """kubelet updates a mounted ConfigMap by swapping a ``..data`` symlink."""
    producer, pin = pinned_ring
    mount = tmp_path / "config"
    mount.mkdir()

    def publish(version: int, enabled: bool) -> None:
        data = mount / f"..2026_11_22_00_00_0{version}"
        data.mkdir()
        (data / "addon.json").write_text(
            json.dumps({"nodeAgent": {"enablePolicyEventLogs": str(enabled).lower()}})
        )
        (mount / "..data_tmp").symlink_to(data.name)
        (mount / "..data_tmp").rename(mount / "..data")

    publish(1, False)
    (mount / "addon.json").symlink_to("..data/addon.json")
    log = tmp_path / "flows.log"
    with AgentProcess(
        "--ringbuf-pin", str(pin), "--config", str(mount / "addon.json"), "--log-file", str(log)
    ) as agent:
        assert agent.wait_ready()["enablePolicyEventLogs"] is False
        publish(2, True)
        wait_until(lambda: agent.ready()["enablePolicyEventLogs"] is True, message="reload")
        producer.produce(aws_v4_record("10.0.0.1", 7, "10.0.0.2", 80, 6, 1, 60, 0, 2))
        wait_until(lambda: read_lines(log), message="a line")
        assert agent.stop() == 0


def test_a_second_signal_exits_at_once(pinned_ring, tmp_path):
    _, pin = pinned_ring
    with AgentProcess(
        "--ringbuf-pin",
        str(pin),
        "--enable-policy-event-logs",
        "--log-file",
        str(tmp_path / "f.log"),
    ) as agent:
        agent.wait_ready()
        agent.signal(signal.SIGSTOP)  # both signals are pending when it runs again
        agent.signal(signal.SIGTERM)
        agent.signal(signal.SIGINT)
        agent.signal(signal.SIGCONT)
        assert agent.process.wait(10) == 1
        assert ": exiting now" in agent.stderr()
