"""The page as a file: self-contained, small, and safe with whatever names a log holds."""

from __future__ import annotations

import re

import orjson
import pytest

from flowlog.flowmap import write_map
from tests.flowmap.conftest import STARS_LOG, STARS_PODS
from tests.flowmap.lines import CLIENT, FRONTEND, verdict, write_lines
from tests.flowmap.offline import external_references
from tests.support.cluster_flows import flow_lines, make_cluster, write_rotated

MAX_PAGE_BYTES = 5 * 2**20


@pytest.fixture(scope="module")
def stars_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    output = tmp_path_factory.mktemp("stars") / "map.html"
    write_map([STARS_LOG], output, known_pods=STARS_PODS, title="Stars")
    return output.read_text()


def embedded_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="flowmap-data">(.*?)</script>', page)
    assert found
    return orjson.loads(found.group(1))


def test_nothing_in_the_page_points_outside_it(stars_page):
    assert external_references(stars_page) == []
    assert "<script src" not in stars_page and "<link" not in stars_page


def test_the_stars_map_in_the_file(stars_page):
    nodes = set(re.findall(r'data-node="([^"]+)"', stars_page))
    assert nodes == {
        "pod:management-ui/management-ui-qrb2g",
        "pod:client/client-xlffc",
        "pod:stars/frontend-cscnf",
        "pod:stars/backend-sz87q",
    }
    groups = re.findall(r'data-group="([^"]+)"', stars_page)
    assert groups == ["namespace:client", "namespace:management-ui", "namespace:stars"]
    statuses = re.findall(r'class="edge ([a-z-]+)"', stars_page)
    # The UI is let in again by allow-ui, the frontend and backend by their policies.
    assert sorted(statuses) == ["denied"] * 4 + ["partly-denied"] * 5
    data = embedded_data(stars_page)
    ui_to_client = data["edges"][
        "pod:management-ui/management-ui-qrb2g>pod:client/client-xlffc:9000/TCP"
    ]
    assert (ui_to_client["flows"], ui_to_client["denied"], ui_to_client["latest"]) == (
        4,
        1,
        "allowed",
    )
    assert ["DENY", "client/default-deny", "ingress", 1] in ui_to_client["policies"]
    assert ["ACCEPT", "client/allow-ui", "ingress", 3] in ui_to_client["policies"]
    assert "Denied (9 edges)" in stars_page
    assert "stars/default-deny" in stars_page and "client/default-deny" in stars_page


def test_names_from_the_log_are_text_never_markup(tmp_path):
    hostile = ("web", "</script><script>alert(1)</script>", 'deployment/x"><b>', "10.9.9.9")
    path = write_lines(tmp_path / "network-policy-agent.log", [verdict(hostile, FRONTEND, 80)])
    output = tmp_path / "map.html"
    write_map([path], output)
    page = output.read_text()
    assert "<script>alert(1)" not in page
    assert page.count("</script>") == 2  # the data's and the code's own
    assert page.count("<b>") == 0
    data = embedded_data(page)
    assert f"pod:web/{hostile[1]}" in data["nodes"]


def test_a_page_of_200_pods_stays_small(tmp_path):
    files = write_rotated(tmp_path / "logs", flow_lines(make_cluster(), 30_000), 10_000, 1)
    report = write_map(files, tmp_path / "map.html")
    assert report.graph.level == "pod" and 150 < report.graph.pods <= 200
    assert len(report.graph.edges) > 1000
    assert report.page_bytes < MAX_PAGE_BYTES
    assert external_references((tmp_path / "map.html").read_text()) == []


def test_an_empty_log_is_an_empty_map(tmp_path):
    path = tmp_path / "network-policy-agent.log"
    path.write_bytes(b"")
    report = write_map([path], tmp_path / "map.html")
    assert report.graph.edges == [] and report.graph.nodes == {}
    assert report.graph.notes == ["No flows to draw in what was read"]
    assert "Nothing was denied." in (tmp_path / "map.html").read_text()


def test_a_name_too_long_for_its_box_is_cut_and_whole_in_its_title(tmp_path):
    long_name = (
        "stars",
        "frontend-with-a-very-long-name-indeed-5c4b8d7f9-bcdfg",
        "deployment/f",
        "10.0.1.9",
    )
    path = write_lines(tmp_path / "network-policy-agent.log", [verdict(CLIENT, long_name, 80)])
    write_map([path], tmp_path / "map.html")
    page = (tmp_path / "map.html").read_text()
    assert f"<title>stars/{long_name[1]}</title>" in page
    [shown] = re.findall(r">(frontend-with[^<]*)</text>", page)
    assert shown.endswith("…") and long_name[1].startswith(shown[:-1])
