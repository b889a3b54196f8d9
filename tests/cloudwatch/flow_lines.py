"""Flow-log lines in the exact format the agent writes, and the AWS agent's shorter ones."""

from __future__ import annotations

import time

FLOWLOG_KEYS_TAIL = (
    ',"Direction":"ingress","Tier":"NETWORK_POLICY","Packet Size":60,"Node":"ip-10-0-0-1"'
    ',"Pod":"frontend-abc","Namespace":"stars","Policy":"default-deny",'
    '"Policy Namespace":"stars"'
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(milliseconds: int) -> str:
    seconds, millis = divmod(milliseconds, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def line(milliseconds: int, number: int, aws: bool = False) -> str:
    """One line (without its newline); ``number`` makes it unique (the source port and
    address), ``aws`` leaves out the keys the AWS agent does not write."""
    text = (
        f'{{"level":"info","timestamp":"{iso(milliseconds)}","logger":"ebpf-client",'
        f'"msg":"Flow Info: ","Src IP":"10.{number >> 16 & 255}.{number >> 8 & 255}.'
        f'{number & 255}","Src Port":{number % 65536},"Dest IP":"10.0.1.7","Dest Port":80,'
        f'"Proto":"TCP","Verdict":"DENY"'
    )
    return text + ("}" if aws else FLOWLOG_KEYS_TAIL + "}")


def lines(
    count: int,
    start_ms: int | None = None,
    step_ms: int = 1,
    first_number: int = 0,
    aws_every: int = 0,
) -> list[str]:
    """``count`` unique lines, timestamps from ``start_ms`` (default: an hour ago) rising
    by ``step_ms``; every ``aws_every``-th line is an AWS agent line."""
    start_ms = now_ms() - 3_600_000 if start_ms is None else start_ms
    return [
        line(
            start_ms + index * step_ms,
            first_number + index,
            aws=bool(aws_every) and index % aws_every == 0,
        )
        for index in range(count)
    ]


def text(lines_: list[str]) -> bytes:
    return "".join(f"{item}\n" for item in lines_).encode()
