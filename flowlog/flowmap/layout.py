"""Where everything goes: groups as boxes packed in rows, their members in a grid, edges as arcs.

Groups keep their order (namespaces by name, then nodes, then the outside
world) and are packed left to right into rows, the row width chosen so that
the picture comes closest to a browser window's shape. A group's members sit
in a near-square grid, by name, so a pod is found where its name says.

An edge is a quadratic arc that bends to its left: a connection and its reply
bend apart, and an arc between distant boxes rises clear of the boxes between
them; further edges between the same two boxes (other ports) bend further.
In large pictures, edges between two groups are bundled instead: they gather
where the groups face each other and run side by side, one bundle each way.
Edge labels go where they cover no box and no other label, or nowhere.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from flowlog.flowmap.graph import FlowGraph, MapEdge

NODE_WIDTH, NODE_HEIGHT = 190, 30
GROUP_PADDING, GROUP_HEADER = 22, 30
# Pictures of a few boxes get room for arcs and their labels; large ones stay compact.
ROOMY_NODES = 16
ROOMY_GAP, COMPACT_GAP = (150, 110), (46, 34)  # between boxes in a group: across, down
GROUP_GAP = 70
ASPECT = 1.6
BEND = 0.22  # an arc's height, as a share of the distance it spans
NEXT_BEND = 0.45  # how much further each further edge between the same boxes bends
LOOP = 34  # how far an edge from a box to itself reaches out
BUNDLE_OFFSET = 10  # between a bundle of edges one way and the bundle back
LABEL_CHARACTER_WIDTH, LABEL_HEIGHT = 6.0, 14  # of the 11 px labels on edges
LABEL_PLACES = (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8)  # where along an arc to try, in turn


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    width: float
    height: float

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2

    def border_towards(self, x: float, y: float) -> tuple[float, float]:
        """Where the line from the centre to (x, y) leaves the box."""
        cx, cy = self.center
        dx, dy = x - cx, y - cy
        if dx == 0 and dy == 0:
            return cx, cy
        scale = min(
            self.width / 2 / abs(dx) if dx else math.inf,
            self.height / 2 / abs(dy) if dy else math.inf,
        )
        return cx + dx * scale, cy + dy * scale


Point = tuple[float, float]


@dataclass(frozen=True)
class Arc:
    """A Bézier curve: start, one or two control points, end."""

    points: tuple[Point, ...]

    @property
    def path(self) -> str:
        """SVG path data: a quadratic (Q) or cubic (C) curve."""
        start, *controls, end = (f"{x:.0f},{y:.0f}" for x, y in self.points)
        command = "Q" if len(controls) == 1 else "C"
        return f"M{start}{command}{' '.join(controls)} {end}"

    def point_at(self, t: float) -> Point:
        points = list(self.points)
        while len(points) > 1:  # de Casteljau
            points = [
                ((1 - t) * x0 + t * x1, (1 - t) * y0 + t * y1)
                for (x0, y0), (x1, y1) in itertools.pairwise(points)
            ]
        return points[0]


@dataclass(frozen=True)
class Label:
    x: float  # the text's middle
    y: float  # its baseline
    text: str


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    groups: dict[str, Box]
    nodes: dict[str, Box]
    edges: dict[str, Arc]
    labels: dict[str, Label]  # edges whose label found a free place


def lay_out(graph: FlowGraph, labels: Mapping[str, str] | None = None) -> Layout:
    """Boxes for groups and nodes, arcs for edges, and places for the ``labels`` of edges
    (by edge id) that do not cover a box or another label; the rest go unlabelled."""
    gap_x, gap_y = ROOMY_GAP if len(graph.nodes) <= ROOMY_NODES else COMPACT_GAP
    sizes = {}
    for group in graph.groups:
        columns = _columns(len(group.members))
        rows = math.ceil(len(group.members) / columns)
        sizes[group.id] = (
            columns * NODE_WIDTH + (columns - 1) * gap_x + 2 * GROUP_PADDING,
            GROUP_HEADER + rows * NODE_HEIGHT + (rows - 1) * gap_y + GROUP_PADDING,
        )
    row_width = _best_row_width(list(sizes.values()))
    groups: dict[str, Box] = {}
    nodes: dict[str, Box] = {}
    margin = GROUP_GAP  # room for arcs leaving the outer boxes
    for group, (x, y) in zip(graph.groups, _pack(list(sizes.values()), row_width), strict=True):
        width, height = sizes[group.id]
        groups[group.id] = Box(margin + x, margin + y, width, height)
        columns = _columns(len(group.members))
        for index, member in enumerate(group.members):
            row, column = divmod(index, columns)
            nodes[member] = Box(
                margin + x + GROUP_PADDING + column * (NODE_WIDTH + gap_x),
                margin + y + GROUP_HEADER + row * (NODE_HEIGHT + gap_y),
                NODE_WIDTH,
                NODE_HEIGHT,
            )
    width = max((box.x + box.width for box in groups.values()), default=0) + margin
    height = max((box.y + box.height for box in groups.values()), default=0) + margin
    node_groups = {member: group.id for group in graph.groups for member in group.members}
    arcs = _arcs(graph.edges, nodes, groups, node_groups)
    return Layout(width, height, groups, nodes, arcs, _place_labels(arcs, labels or {}, nodes))


def _pack(sizes: list[tuple[float, float]], row_width: float) -> list[tuple[float, float]]:
    """Top-left corners of boxes put left to right in rows no wider than ``row_width``."""
    corners = []
    x = y = row_height = 0.0
    for width, height in sizes:
        if x and x + width > row_width:
            x, y, row_height = 0.0, y + row_height + GROUP_GAP, 0.0
        corners.append((x, y))
        x += width + GROUP_GAP
        row_height = max(row_height, height)
    return corners


def _best_row_width(sizes: list[tuple[float, float]]) -> float:
    """The row width whose packing comes closest to the ASPECT of a browser window."""
    if not sizes:
        return 0.0
    widest = max(width for width, _ in sizes)
    candidates = {widest}
    total = 0.0
    for width, _ in sizes:
        total += width + GROUP_GAP
        candidates.add(max(widest, total - GROUP_GAP))

    def misfit(row_width: float) -> float:
        corners = _pack(sizes, row_width)
        right = max(x + w for (x, _), (w, _) in zip(corners, sizes, strict=True))
        bottom = max(y + h for (_, y), (_, h) in zip(corners, sizes, strict=True))
        return abs(math.log((right / bottom) / ASPECT))

    return min(sorted(candidates), key=misfit)


def _columns(members: int) -> int:
    return max(1, math.ceil(math.sqrt(members)))


def _arcs(
    edges: list[MapEdge], nodes: dict[str, Box], groups: dict[str, Box], node_groups: dict[str, str]
) -> dict[str, Arc]:
    """Arcs between boxes; in large pictures, edges between two groups are bundled: they
    gather where the groups face each other and run side by side between them."""
    bundled = len(nodes) > ROOMY_NODES
    arcs = {}
    between: dict[tuple[str, str], int] = defaultdict(int)  # edges so far per ordered pair
    for edge in sorted(edges, key=lambda e: (e.source, e.target, e.port, e.proto)):
        order = between[(edge.source, edge.target)]
        between[(edge.source, edge.target)] += 1
        source, target = nodes[edge.source], nodes[edge.target]
        source_group, target_group = node_groups[edge.source], node_groups[edge.target]
        if edge.source == edge.target:
            arcs[edge.id] = _loop(source, order)
        elif bundled and source_group != target_group:
            arcs[edge.id] = _bundled(source, target, groups[source_group], groups[target_group])
        else:
            arcs[edge.id] = _arc(source, target, order)
    return arcs


def _left_of(start: Point, end: Point) -> Point:
    """The unit vector to the left of travelling from start to end (SVG's y grows down)."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    distance = math.hypot(dx, dy) or 1.0
    return dy / distance, -dx / distance


def _arc(source: Box, target: Box, order: int) -> Arc:
    (x1, y1), (x2, y2) = source.center, target.center
    bend = max(BEND * math.hypot(x2 - x1, y2 - y1), NODE_HEIGHT) * (1 + NEXT_BEND * order)
    normal_x, normal_y = _left_of((x1, y1), (x2, y2))
    control = (x1 + x2) / 2 + normal_x * bend, (y1 + y2) / 2 + normal_y * bend
    return Arc((source.border_towards(*control), control, target.border_towards(*control)))


def _bundled(source: Box, target: Box, source_group: Box, target_group: Box) -> Arc:
    # Through the points where the two groups' borders face each other, moved a little
    # to the left of travel so that the bundle one way runs beside the bundle back.
    exit_point = source_group.border_towards(*target_group.center)
    entry_point = target_group.border_towards(*source_group.center)
    normal_x, normal_y = _left_of(source_group.center, target_group.center)
    first = exit_point[0] + normal_x * BUNDLE_OFFSET, exit_point[1] + normal_y * BUNDLE_OFFSET
    second = entry_point[0] + normal_x * BUNDLE_OFFSET, entry_point[1] + normal_y * BUNDLE_OFFSET
    return Arc((source.border_towards(*first), first, second, target.border_towards(*second)))


def _loop(box: Box, order: int) -> Arc:
    reach = LOOP * (1 + NEXT_BEND * order)
    right, top = box.x + box.width, box.y
    start = (right - 24, top)
    return Arc(
        (
            start,
            (start[0], top - reach),
            (right + reach, top - reach),
            (right, top + box.height / 2),
        )
    )


def _place_labels(
    arcs: dict[str, Arc], texts: Mapping[str, str], nodes: dict[str, Box]
) -> dict[str, Label]:
    """Each label at the first point along its arc where it covers no box and no label."""
    taken = [Box(b.x - 2, b.y - 2, b.width + 4, b.height + 4) for b in nodes.values()]
    placed = {}
    for edge_id, text in texts.items():
        width = len(text) * LABEL_CHARACTER_WIDTH + 6
        for t in LABEL_PLACES:
            x, y = arcs[edge_id].point_at(t)
            box = Box(x - width / 2, y - LABEL_HEIGHT / 2, width, LABEL_HEIGHT)
            if not any(_overlap(box, other) for other in taken):
                taken.append(box)
                placed[edge_id] = Label(x, y + LABEL_HEIGHT / 2 - 3, text)
                break
    return placed


def _overlap(a: Box, b: Box) -> bool:
    return (
        a.x < b.x + b.width
        and b.x < a.x + a.width
        and a.y < b.y + b.height
        and b.y < a.y + a.height
    )
