"""The page in a real browser (Debian's headless chromium), offline.

Every page is loaded with the network shut (a refusing proxy, a resolver that
resolves nothing, DevTools' offline mode), and must render all the same and
ask for nothing but itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowlog.flowmap import write_map
from tests.flowmap.conftest import STARS_LOG, STARS_PODS
from tests.support.browser import Browser, Page, chromium_missing, running_browser
from tests.support.cluster_flows import flow_lines, make_cluster, write_rotated
from tests.support.png import colours

pytestmark = pytest.mark.browser

UI = "pod:management-ui/management-ui-qrb2g"
CLIENT = "pod:client/client-xlffc"
FRONTEND = "pod:stars/frontend-cscnf"
BACKEND = "pod:stars/backend-sz87q"
WHITE = (255, 255, 255)
DENIED_RED = (0xD0, 0x31, 0x2D)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    missing = chromium_missing()
    if missing:
        pytest.skip(missing)
    with running_browser(tmp_path_factory.mktemp("chromium-profile")) as running:
        yield running


@pytest.fixture(scope="module")
def stars_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("stars") / "stars.html"
    write_map([STARS_LOG], output, known_pods=STARS_PODS, title="The stars demo")
    return output


@pytest.fixture
def stars(browser: Browser, stars_map: Path) -> Page:
    return browser.open(stars_map.as_uri())


def nodes(page: Page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#map .node')].map(n => n.dataset.node)")


def shown_edges(page: Page) -> dict[str, str]:
    """Edges not hidden by a filter, by id, with their class."""
    return page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#map .edge:not(.hidden)')]"
        ".map(e => [e.dataset.edge, e.getAttribute('class')]))"
    )


def set_control(page: Page, control: str, value: str) -> None:
    page.evaluate(
        f"(() => {{ const c = document.getElementById({control!r}); c.value = {value!r};"
        " c.dispatchEvent(new Event('input', {bubbles: true})); })()"
    )


def click(page: Page, selector: str) -> None:
    page.evaluate(
        f"document.querySelector({selector!r}).dispatchEvent(new MouseEvent('click', "
        "{bubbles: true}))"
    )


def test_renders_offline_and_asks_for_nothing_but_itself(stars, stars_map):
    # The script ran (it fills in what is shown) and nothing failed.
    assert stars.evaluate("document.getElementById('shown').textContent") == ("9 of 9 edges shown")
    assert stars.errors == []
    assert stars.requested_urls == [stars_map.as_uri()]
    assert stars.evaluate("navigator.onLine") is False


def test_the_dom_holds_the_stars_pods_edges_and_policies(stars):
    assert sorted(nodes(stars)) == sorted([UI, CLIENT, FRONTEND, BACKEND])
    groups = stars.evaluate(
        "[...document.querySelectorAll('#map .group text')].map(t => t.textContent)"
    )
    assert groups == ["client", "management-ui", "stars"]
    edges = shown_edges(stars)
    assert len(edges) == 9
    denied = {edge for edge, classes in edges.items() if classes == "edge denied"}
    assert denied == {
        f"{CLIENT}>{BACKEND}:6379/TCP",
        f"{BACKEND}>{CLIENT}:9000/TCP",
        f"{BACKEND}>{FRONTEND}:80/TCP",
        f"{FRONTEND}>{CLIENT}:9000/TCP",
    }
    # Denied lines are dashed and red, so they stand out.
    style = stars.evaluate(
        f"(() => {{ const s = getComputedStyle(document.querySelector("
        f"'[data-edge=\"{CLIENT}>{BACKEND}:6379/TCP\"] .line'));"
        " return [s.stroke, s.strokeDasharray]; })()"
    )
    assert style == ["rgb(208, 49, 45)", "7px, 4px"]
    labels = stars.evaluate(
        "[...document.querySelectorAll('#map .edge-label')].map(t => t.textContent)"
    )
    assert "6379/TCP ✕ default-deny" in labels
    table = stars.evaluate(
        "[...document.querySelectorAll('#denied tbody tr')].map(r => "
        "[...r.cells].map(c => c.textContent).slice(0, 5))"
    )
    assert ["client/client-xlffc", "stars/backend-sz87q", "6379/TCP", "4 of 4",
            "stars/default-deny"] in table  # fmt: skip
    assert len(table) == 9


def test_a_screenshot_shows_a_picture(stars):
    counted = colours(stars.screenshot())
    total = sum(counted.values())
    assert len(counted) > 200  # boxes, text, arcs and their antialiasing
    assert counted[WHITE] < total * 0.9
    reddish = sum(
        count
        for (r, g, b), count in counted.items()
        if abs(r - DENIED_RED[0]) < 40 and g < 110 and b < 110
    )
    assert reddish > 200  # the denied arcs


def test_clicking_a_box_shows_its_details_and_edges(stars):
    click(stars, f'[data-node="{FRONTEND}"]')
    details = stars.evaluate("document.getElementById('details').innerText")
    assert "stars/frontend-cscnf" in details
    assert "ports served\n80/TCP" in details
    assert "← stars/backend-sz87q 80/TCP: 4 flows, 4 denied" in details
    dimmed = stars.evaluate(
        "[...document.querySelectorAll('#map .edge.dimmed')].map(e => e.dataset.edge)"
    )
    assert len(dimmed) == 4  # the edges that do not touch the frontend
    click(stars, f'[data-edge="{CLIENT}>{BACKEND}:6379/TCP"] .hit')
    details = stars.evaluate("document.getElementById('details').innerText")
    assert details.startswith("client/client-xlffc\n→ stars/backend-sz87q\n")
    assert "denied at ingress: stars/default-deny (4)" in details
    assert "first seen\n2026-12-04" in details


def test_hovering_an_edge_shows_its_counts_and_policy(stars):
    text = stars.evaluate(
        f'(() => {{ const hit = document.querySelector(\'[data-edge="{UI}>{CLIENT}:9000/TCP"] '
        ".hit'); const box = hit.getBoundingClientRect();"
        " hit.dispatchEvent(new MouseEvent('mousemove', {bubbles: true,"
        " clientX: box.x + box.width / 2, clientY: box.y + box.height / 2}));"
        " const tip = document.getElementById('tooltip');"
        " return tip.hidden ? null : tip.innerText; })()"
    )
    assert text.splitlines()[:3] == [
        "management-ui/management-ui-qrb2g → client/client-xlffc 9000/TCP",
        "partly denied: 4 flows, 1 denied; the latest allowed",
        "denied at ingress: client/default-deny (1)",
    ]


def test_filters_by_verdict_namespace_and_port(stars):
    set_control(stars, "verdict", "allowed")
    assert len(shown_edges(stars)) == 5  # the partly denied ones
    set_control(stars, "verdict", "denied")
    assert len(shown_edges(stars)) == 9
    set_control(stars, "verdict", "")
    set_control(stars, "namespace", "management-ui")
    assert set(shown_edges(stars)) == {
        f"{UI}>{CLIENT}:9000/TCP",
        f"{UI}>{FRONTEND}:80/TCP",
        f"{UI}>{BACKEND}:6379/TCP",
    }
    set_control(stars, "port", "80/TCP")
    assert set(shown_edges(stars)) == {f"{UI}>{FRONTEND}:80/TCP"}
    assert stars.evaluate("document.getElementById('shown').textContent") == "1 of 9 edges shown"
    click(stars, "#reset")
    assert len(shown_edges(stars)) == 9


def test_search_finds_a_pod(stars):
    set_control(stars, "search", "backend")
    matches = stars.evaluate(
        "[...document.querySelectorAll('#map .node.match')].map(n => n.dataset.node)"
    )
    assert matches == [BACKEND]
    dimmed_nodes = stars.evaluate(
        "[...document.querySelectorAll('#map .node.dimmed')].map(n => n.dataset.node)"
    )
    assert dimmed_nodes == []  # every other pod talks to the backend
    set_control(stars, "search", "10.42.0.10")  # by address too
    assert stars.evaluate("document.querySelector('#map .node.match').dataset.node") == UI


def test_a_map_of_200_pods_renders(browser, tmp_path):
    files = write_rotated(tmp_path / "logs", flow_lines(make_cluster(), 30_000), 10_000, 1)
    output = tmp_path / "cluster.html"
    report = write_map(files, output)
    page = browser.open(output.as_uri())
    assert page.errors == []
    assert page.requested_urls == [output.as_uri()]
    assert len(nodes(page)) == len(report.graph.nodes)
    edges = len(report.graph.edges)
    assert page.evaluate("document.getElementById('shown').textContent") == (
        f"{edges:,} of {edges:,} edges shown"
    )
    assert len(colours(page.screenshot())) > 200
