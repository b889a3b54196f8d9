"""``flowlog map``: who talks to whom, and what policy denied, as one HTML page.

Lines stream from local files (``local_files``) or come back aggregated from
a Logs Insights query over the cluster's log group (``cloudwatch``) into a
tally of distinct observations (``tally``); ``endpoints`` and ``graph`` turn
those into pods, workloads, nodes and outside networks joined by edges;
``layout`` places them and ``page`` writes the file. ``write_map`` and
``write_cloudwatch_map`` are the ways in.

Why the layout is computed here and drawn as SVG, rather than by a graph
library in the browser: the picture is namespaces as boxes with their pods
inside, which a grid inside packed boxes draws well, deterministically, in a
few lines of Python and no third-party code to vendor and keep current; the
SVG is in the page itself, so it shows without the script (and prints), and
every node and edge is an element a test (or a screen reader) can find. The
libraries that draw compound graphs well (Cytoscape.js with fcose, ELK) are
300 KB to 1.5 MB of script and draw to a canvas. The script on the page
(``page.js``, about 350 lines, no dependencies) only adds details, filters,
search, pan and zoom. The stars demo's page is 36 KB; a 184-pod cluster's,
with 2,000 edges, about 2 MB.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowlog.flowmap.endpoints import KnownPod
from flowlog.flowmap.graph import FlowGraph, MapOptions, build_graph
from flowlog.flowmap.local_files import ReadReport, read_flow_logs
from flowlog.flowmap.page import PageContext, render_page
from flowlog.flowmap.tally import FlowTally
from flowlog.insights.output import Progress

__all__ = ["KnownPod", "MapOptions", "MapReport", "write_cloudwatch_map", "write_map"]

DEFAULT_TITLE = "Flow map"
DEFAULT_OPTIONS = MapOptions()


@dataclass(frozen=True)
class MapReport:
    """What was read and what the page shows."""

    output: Path
    page_bytes: int
    graph: FlowGraph
    read: ReadReport  # for CloudWatch: the lines the rows add up, rows that were not numbers

    def describe(self) -> str:
        by = "" if self.graph.level == "pod" else f", drawn by {self.graph.level}"
        return f"{self.output} ({self.page_bytes / 1024:,.0f} KiB): {self.graph.summary()}{by}"


def write_map(
    paths: Sequence[Path],
    output: Path,
    options: MapOptions = DEFAULT_OPTIONS,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    known_pods: Mapping[str, KnownPod] | None = None,
    title: str = DEFAULT_TITLE,
    time_range: str = "",
) -> MapReport:
    """Map the flow-log files ``paths`` (plain, rotated or gzipped) into ``output``.

    ``known_pods`` names pods by address, for lines that give only addresses.
    """
    tally = FlowTally(options.outside_networks())
    read = read_flow_logs(paths, tally, since_ms, until_ms)
    files = f"{len(paths)} files" if len(paths) != 1 else str(paths[0])
    context = PageContext(title, files, read.lines_read, read.bad_lines, time_range)
    return _write(tally, output, options, known_pods, context, read, [])


def write_cloudwatch_map(
    client: Any,
    log_group: str,
    start: int,
    end: int,
    output: Path,
    options: MapOptions = DEFAULT_OPTIONS,
    *,
    timeout: float,
    progress: Progress,
    title: str = DEFAULT_TITLE,
    time_range: str = "",
) -> MapReport:
    """Map what a Logs Insights query over ``log_group`` from ``start`` to ``end``
    (epoch seconds) aggregates, into ``output``."""
    from flowlog.flowmap.cloudwatch import query_edges

    tally = FlowTally(options.outside_networks())
    rows = query_edges(client, log_group, start, end, tally, timeout, progress)
    read = ReadReport(lines_read=rows.lines, bad_lines=rows.bad_rows)
    if rows.bad_rows:
        read.first_bad_line = "a row of the query's result"
    context = PageContext(title, f"CloudWatch Logs {log_group}", rows.lines, 0, time_range)
    notes = [rows.truncated] if rows.truncated else []
    return _write(tally, output, options, None, context, read, notes)


def _write(
    tally: FlowTally,
    output: Path,
    options: MapOptions,
    known_pods: Mapping[str, KnownPod] | None,
    context: PageContext,
    read: ReadReport,
    notes: list[str],
) -> MapReport:
    graph = build_graph(tally, options, known_pods)
    graph.notes.extend(notes)
    page = render_page(graph, context).encode()
    _replace(output, page)
    return MapReport(output, len(page), graph, read)


def _replace(output: Path, content: bytes) -> None:
    """Write the whole page or nothing: a reader never sees half a page."""
    directory = output.parent
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
