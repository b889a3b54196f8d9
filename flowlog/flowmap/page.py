"""The map as one HTML file: the SVG drawn here, its details as JSON, script and styles inline.

Everything the page needs is in the file (``page.css`` and ``page.js`` beside
this module are copied in), so it opens offline and can be attached to a
ticket. The SVG is complete without the script; the script adds details on
hover and click, the filters, the search and pan and zoom, reading the
details from the embedded JSON.
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass
from importlib import resources

import orjson

from flowlog.flowmap.graph import (
    BY_NAMESPACE,
    BY_WORKLOAD,
    DENIED,
    PARTLY_DENIED,
    FlowGraph,
    MapEdge,
    MapNode,
    plural,
)
from flowlog.flowmap.layout import Layout, lay_out

# Port and policy labels on the arcs themselves only while they cannot pile up.
LABELLED_EDGES = 40
# Beyond this many edges allowed ones are drawn faint, so that denied ones stand out.
CROWDED_EDGES = 150
# Names and addresses listed in a node's details; the rest are counted.
LISTED = 20
DENIED_ROWS = 200
CHARACTER_WIDTH = 6.9  # of the 12 px sans-serif labels, on average
STATUS_WORDS = {"allowed": "allowed", DENIED: "denied", PARTLY_DENIED: "partly denied"}


@dataclass(frozen=True)
class PageContext:
    """What the page says about where the map came from."""

    title: str
    source: str  # "3 files: /var/log/...", "CloudWatch Logs /aws/eks/prod/cluster"
    lines_read: int  # flow-log lines, or Insights result rows
    bad_lines: int = 0
    time_range: str = ""  # as asked for (--since/--until), if it was


def render_page(graph: FlowGraph, context: PageContext) -> str:
    labels = {edge.id: _edge_label(edge) for edge in graph.edges[:LABELLED_EDGES]}
    layout = lay_out(graph, labels if len(graph.edges) <= LABELLED_EDGES else {})
    assets = resources.files("flowlog.flowmap")
    style = assets.joinpath("page.css").read_text()
    script = assets.joinpath("page.js").read_text()
    data = _page_data(graph)
    # "<" never appears raw inside the script element, so no "</script>" can end it early.
    data_json = orjson.dumps(data).decode().replace("<", "\\u003c")
    title = html.escape(context.title)
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
            f"<title>{title}</title>\n<style>\n{style}</style>\n</head>\n<body>\n",
            _header(graph, context),
            _toolbar(graph),
            '<main>\n<div id="canvas">\n',
            _svg(graph, layout),
            '</div>\n<aside id="details" aria-live="polite">'
            '<p class="hint">Hover over or click a box or an arrow for its details.</p>'
            "</aside>\n</main>\n",
            _legend(),
            _denied_table(graph),
            '<div id="tooltip" hidden></div>\n',
            f'<script type="application/json" id="flowmap-data">{data_json}</script>\n',
            f"<script>\n{script}</script>\n</body>\n</html>\n",
        ]
    )


# --- the header, the controls and the legend ----------------------------------------


def _header(graph: FlowGraph, context: PageContext) -> str:
    level = {BY_WORKLOAD: "Each box is a workload. ", BY_NAMESPACE: "Each box is a namespace. "}
    source = [f"{context.source}, {plural(context.lines_read, 'line')} read"]
    if context.bad_lines:
        source.append(f"{plural(context.bad_lines, 'line')} that are not flow-log lines skipped")
    if graph.undecided_lines:
        source.append(f"{plural(graph.undecided_lines, 'verdict')} neither allowed nor denied")
    if context.time_range:
        source.append(context.time_range)
    if graph.edges:
        first = min(edge.first_seen for edge in graph.edges)
        last = max(edge.last_seen for edge in graph.edges)
        source.append(f"seen {_time(first)} to {_time(last)}")
    source.append(f"made {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    notes = "".join(f'<p class="note">{html.escape(note)}</p>\n' for note in graph.notes)
    return (
        f"<header>\n<h1>{html.escape(context.title)}</h1>\n"
        f'<p class="facts">{html.escape(graph.summary())}</p>\n'
        f'<p class="source">{html.escape(level.get(graph.level, "") + " · ".join(source))}</p>\n'
        f"{notes}</header>\n"
    )


def _toolbar(graph: FlowGraph) -> str:
    namespaces = sorted({n.namespace for n in graph.nodes.values() if n.namespace})
    services = sorted({(e.port, e.proto) for e in graph.edges})
    namespace_options = "".join(
        f'<option value="{html.escape(ns)}">{html.escape(ns)}</option>' for ns in namespaces
    )
    port_options = "".join(
        f'<option value="{port}/{html.escape(proto)}">{port}/{html.escape(proto)}</option>'
        for port, proto in services
    )
    return (
        '<nav id="toolbar">\n'
        '<label>Search <input id="search" type="search" placeholder="pod, workload, address"'
        ' autocomplete="off"></label>\n'
        '<label>Namespace <select id="namespace"><option value="">all</option>'
        f"{namespace_options}</select></label>\n"
        '<label>Verdict <select id="verdict"><option value="">all</option>'
        '<option value="denied">denied (all or some)</option>'
        '<option value="allowed">allowed (all or some)</option></select></label>\n'
        '<label>Port <select id="port"><option value="">all</option>'
        f"{port_options}</select></label>\n"
        '<button type="button" id="reset">Reset</button>\n'
        '<button type="button" id="fit" title="Fit the map to the window">Fit</button>\n'
        '<span id="shown" aria-live="polite"></span>\n'
        '<span class="hint">Scroll to zoom, drag to move.</span>\n'
        "</nav>\n"
    )


def _legend() -> str:
    def line(status: str) -> str:
        return (
            f'<svg width="46" height="12" aria-hidden="true"><path class="line {status}" '
            f'd="M2,6H36" marker-end="url(#arrow-{status})"/></svg>'
        )

    def box(kind: str) -> str:
        return (
            f'<svg width="30" height="16" aria-hidden="true"><rect class="box {kind}-box" '
            'x="1" y="1" width="28" height="14"/></svg>'
        )

    items = [
        (line("allowed"), "allowed"),
        (line(DENIED), "denied: every flow"),
        (line(PARTLY_DENIED), "partly denied: some flows"),
        (box("pod"), "pod"),
        (box("workload"), "workload or namespace"),
        (box("node"), "node (its own address)"),
        (box("outside"), "outside network"),
    ]
    entries = "".join(f"<li>{symbol} {html.escape(text)}</li>" for symbol, text in items)
    return (
        f'<section id="legend"><h2>Legend</h2><ul>{entries}</ul>'
        "<p>An arrow points from the side that opened the connection to the one it "
        "reached for; the thicker, the more flows. Namespaces are the grey boxes.</p>"
        "</section>\n"
    )


def _denied_table(graph: FlowGraph) -> str:
    denied = [edge for edge in graph.edges if edge.denied]
    if not denied:
        return '<section id="denied"><h2>Denied</h2><p>Nothing was denied.</p></section>\n'
    rows = []
    for edge in denied[:DENIED_ROWS]:
        source, target = graph.nodes[edge.source], graph.nodes[edge.target]
        rows.append(
            f'<tr data-edge="{html.escape(edge.id)}"><td>{html.escape(_name(source))}</td>'
            f"<td>{html.escape(_name(target))}</td><td>{html.escape(edge.service)}</td>"
            f'<td class="number">{edge.denied:,} of {edge.flows:,}</td>'
            f"<td>{html.escape(', '.join(_deniers(edge)) or 'not said')}</td>"
            f"<td>{html.escape(_time(edge.last_denied))}</td></tr>"
        )
    more = (
        f"<p>And {len(denied) - DENIED_ROWS:,} more denied edges, drawn on the map.</p>"
        if len(denied) > DENIED_ROWS
        else ""
    )
    return (
        f'<section id="denied"><h2>Denied ({len(denied):,} edges)</h2>'
        "<table><thead><tr><th>From</th><th>To</th><th>Port</th><th>Denied</th>"
        "<th>Denied by</th><th>Last denied</th></tr></thead><tbody>"
        f"{''.join(rows)}</tbody></table>{more}</section>\n"
    )


# --- the picture ------------------------------------------------------------------


def _svg(graph: FlowGraph, layout: Layout) -> str:
    parts = [
        f'<svg id="map" viewBox="0 0 {layout.width:.0f} {layout.height:.0f}" '
        f'data-width="{layout.width:.0f}" data-height="{layout.height:.0f}" role="img" '
        f'class="{"crowded" if len(graph.edges) > CROWDED_EDGES else ""}" '
        f'aria-label="Flow map: {html.escape(graph.summary())}">\n<defs>',
    ]
    for status in ("allowed", DENIED, PARTLY_DENIED, "focus"):
        parts.append(
            # Sized in the picture's units: a thick or highlighted line keeps its arrowhead.
            f'<marker id="arrow-{status}" class="arrow {status}" viewBox="0 0 10 10" refX="9" '
            'refY="5" markerWidth="11" markerHeight="11" markerUnits="userSpaceOnUse" '
            'orient="auto-start-reverse">'
            '<path d="M0,0L10,5L0,10z"/></marker>'
        )
    parts.append('</defs>\n<g id="viewport">\n<g class="groups">\n')
    for group in graph.groups:
        box = layout.groups[group.id]
        parts.append(
            f'<g class="group {group.kind}" data-group="{html.escape(group.id)}">'
            f'<rect x="{box.x:.0f}" y="{box.y:.0f}" width="{box.width:.0f}" '
            f'height="{box.height:.0f}" rx="10"/>'
            f'<text x="{box.x + 12:.0f}" y="{box.y + 20:.0f}">{html.escape(group.label)}</text>'
            "</g>\n"
        )
    parts.append('</g>\n<g class="edges">\n')
    # Allowed edges first, so that denied ones are drawn over them.
    for edge in sorted(graph.edges, key=lambda e: e.denied > 0):
        parts.append(_edge(edge, graph, layout))
    parts.append('</g>\n<g class="nodes">\n')
    for node in graph.nodes.values():
        parts.append(_node(node, layout))
    parts.append("</g>\n</g>\n</svg>\n")
    return "".join(parts)


def _edge_label(edge: MapEdge) -> str:
    """The port, and for denied flows the policies' names (their namespaces are in the
    details)."""
    deniers = sorted({reason.rpartition("/")[2] for reason in _deniers(edge)})
    return edge.service + (" ✕ " + ", ".join(deniers) if deniers else "")


def _edge(edge: MapEdge, graph: FlowGraph, layout: Layout) -> str:
    arc = layout.edges[edge.id]
    width = 1.4 + 1.3 * min(4.0, _log10(edge.flows))
    namespaces = {
        n for n in (graph.nodes[edge.source].namespace, graph.nodes[edge.target].namespace) if n
    }
    attributes = (
        f'class="edge {edge.status}" data-edge="{html.escape(edge.id)}" '
        f'data-source="{html.escape(edge.source)}" data-target="{html.escape(edge.target)}" '
        f'data-service="{html.escape(edge.service)}" '
        f'data-namespaces="{html.escape(" ".join(sorted(namespaces)))}"'
    )
    label = ""
    if placed := layout.labels.get(edge.id):
        label = (
            f'<text class="edge-label" x="{placed.x:.0f}" y="{placed.y:.0f}">'
            f"{html.escape(placed.text)}</text>"
        )
    return (
        f'<g {attributes}><path class="line {edge.status}" d="{arc.path}" '
        f'stroke-width="{width:.1f}" marker-end="url(#arrow-{edge.status})"/>{label}</g>\n'
    )


def _node(node: MapNode, layout: Layout) -> str:
    box = layout.nodes[node.id]
    label = node.label
    fits = int((box.width - 16) / CHARACTER_WIDTH)
    shown = label if len(label) <= fits else label[: fits - 1] + "…"
    return (
        f'<g class="node {node.kind}" data-node="{html.escape(node.id)}" '
        f'data-namespace="{html.escape(node.namespace or "")}" '
        f'data-search="{html.escape(_search_text(node))}" tabindex="0">'
        f'<rect class="box {node.kind}-box" x="{box.x:.0f}" y="{box.y:.0f}" '
        f'width="{box.width:.0f}" height="{box.height:.0f}" rx="{_corner(node)}"/>'
        f'<text x="{box.x + box.width / 2:.0f}" y="{box.y + box.height / 2 + 4:.0f}">'
        f"{html.escape(shown)}</text><title>{html.escape(_name(node))}</title></g>\n"
    )


def _corner(node: MapNode) -> int:
    return {"pod": 6, "workload": 14, "namespace": 14, "node": 1, "outside": 15}[node.kind]


def _search_text(node: MapNode) -> str:
    words = [node.label, node.namespace or "", node.workload or "", *sorted(node.pods)[:LISTED]]
    words += sorted(node.addresses)[:LISTED]
    return " ".join(word.lower() for word in words if word)


# --- the details, for the script -------------------------------------------------


def _page_data(graph: FlowGraph) -> dict:
    # Per node and direction: flows, denied, edges, and the ports.
    flows_out = {node: [0, 0, 0, set()] for node in graph.nodes}
    flows_in = {node: [0, 0, 0, set()] for node in graph.nodes}
    seen: dict[str, list[str]] = {}
    for edge in graph.edges:
        for totals, node in ((flows_out, edge.source), (flows_in, edge.target)):
            totals[node][0] += edge.flows
            totals[node][1] += edge.denied
            totals[node][2] += 1
            totals[node][3].add((edge.port, edge.proto))
            first, last = seen.get(node, [edge.first_seen, edge.last_seen])
            seen[node] = [min(first, edge.first_seen), max(last, edge.last_seen)]
    for totals in (*flows_out.values(), *flows_in.values()):
        totals[3] = [f"{port}/{proto}" for port, proto in sorted(totals[3])][:LISTED]
    nodes = {}
    for node in graph.nodes.values():
        nodes[node.id] = {
            "kind": node.kind,
            "name": _name(node),
            "namespace": node.namespace,
            "workload": node.workload,
            "workloadGuessed": node.workload_guessed,
            "pods": sorted(node.pods)[:LISTED],
            "podCount": len(node.pods),
            "addresses": sorted(node.addresses)[:LISTED],
            "addressCount": len(node.addresses),
            "hosts": sorted(node.hosts)[:LISTED],
            "out": flows_out[node.id],
            "in": flows_in[node.id],
            "firstSeen": _time(seen.get(node.id, ["", ""])[0]),
            "lastSeen": _time(seen.get(node.id, ["", ""])[1]),
        }
    edges = {}
    for edge in graph.edges:
        edges[edge.id] = {
            "source": edge.source,
            "target": edge.target,
            "service": edge.service,
            "status": STATUS_WORDS[edge.status],
            "flows": edge.flows,
            "allowed": edge.allowed,
            "denied": edge.denied,
            "sizes": [
                edge.size("packets_sent"),
                edge.size("bytes_sent"),
                edge.size("packets_received"),
                edge.size("bytes_received"),
            ]
            if edge.has_sizes
            else None,
            "policies": [
                [verdict, reason, direction or "", count]
                for (verdict, reason, direction), count in sorted(
                    edge.policies.items(), key=lambda item: (item[0][0] != "DENY", -item[1])
                )
            ],
            "firstSeen": _time(edge.first_seen),
            "lastSeen": _time(edge.last_seen),
            "lastAllowed": _time(edge.last_allowed),
            "lastDenied": _time(edge.last_denied),
            "latest": _latest(edge),
        }
    return {"nodes": nodes, "edges": edges}


# --- words -----------------------------------------------------------------------


def _name(node: MapNode) -> str:
    """A box's full name: namespace/pod, namespace/workload, a node's or a network's."""
    if node.kind in ("pod", "workload"):
        return f"{node.namespace}/{node.label}"
    if node.kind == "node":
        return f"node {node.label}"
    return node.label


def _latest(edge: MapEdge) -> str:
    """Whether the newest verdict on a partly denied edge allowed or denied."""
    if edge.status != PARTLY_DENIED:
        return ""
    return "allowed" if edge.last_allowed > edge.last_denied else "denied"


def _deniers(edge: MapEdge) -> list[str]:
    return sorted({reason for verdict, reason, _ in edge.policies if verdict == "DENY"})


def _time(stamp: str) -> str:
    """``2026-11-22T05:00:00.123Z`` as ``2026-11-22 05:00:00 UTC``."""
    if len(stamp) >= 19 and stamp[10] == "T":
        return f"{stamp[:10]} {stamp[11:19]} UTC"
    return stamp


def _log10(value: int) -> float:
    return math.log10(value) if value > 1 else 0.0
