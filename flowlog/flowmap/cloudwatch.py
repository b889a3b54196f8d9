"""The cluster's flow log in CloudWatch Logs, aggregated by Logs Insights into edges.

One ``stats`` query over the log group (every node's stream) does the
counting server-side: a row per distinct observation, the same grouping the
local tally makes, so the result is a few rows per edge instead of a row per
line. Insights returns at most 10,000 rows; the query sorts the busiest first,
and a result that reaches the limit is said to be cut short on the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowlog.flowmap.observation import OBSERVED_KEYS, SIZE_KEYS
from flowlog.flowmap.tally import QUERY_SIZE_COLUMNS, FlowTally
from flowlog.insights.cloudwatch_query import run_query
from flowlog.insights.output import Progress

MAX_ROWS = 10_000  # the most GetQueryResults returns
# Every observed key but Node, which would multiply the rows by the number of nodes.
GROUPED_BY = tuple(key for key in OBSERVED_KEYS if key != "Node")


def _field(name: str) -> str:
    return f"`{name}`" if " " in name else name


EDGE_QUERY = (
    "filter ispresent(Verdict) and ispresent(`Dest Port`)\n"
    "| stats count(*) as lines, sum(`Flows Started`) as flowsStarted, "
    + ", ".join(
        f"sum({_field(name)}) as {column}"
        for name, column in zip(SIZE_KEYS, QUERY_SIZE_COLUMNS, strict=True)
    )
    + ", min(@timestamp) as firstSeen, max(@timestamp) as lastSeen\n"
    + "  by "
    + ", ".join(_field(name) for name in GROUPED_BY)
    + f"\n| sort lines desc\n| limit {MAX_ROWS}"
)


@dataclass(frozen=True)
class QueryRows:
    rows: int
    lines: int  # the flow-log lines they add up
    bad_rows: int
    truncated: str  # why the map may be missing edges, or ""


def query_edges(
    client: Any,
    log_group: str,
    start: int,
    end: int,
    tally: FlowTally,
    timeout: float,
    progress: Progress,
) -> QueryRows:
    """Run EDGE_QUERY over [start, end] (epoch seconds) and count its rows into ``tally``.

    Raises CloudWatchQueryError (one line) when the query cannot run or finish.
    """
    results = run_query(client, log_group, EDGE_QUERY, start, end, timeout, progress)
    return count_rows(results.rows, tally)


def count_rows(rows: list[dict[str, str]], tally: FlowTally) -> QueryRows:
    lines = bad = 0
    for row in rows:
        try:
            lines += tally.add_query_row(row)
        except ValueError:  # a port or count that is not a number: not our lines
            bad += 1
    truncated = ""
    if len(rows) >= MAX_ROWS:
        truncated = (
            f"CloudWatch returned {MAX_ROWS:,} rows, the most it returns: the quietest "
            "conversations may be missing (a shorter --since helps)"
        )
    return QueryRows(len(rows), lines, bad, truncated)
