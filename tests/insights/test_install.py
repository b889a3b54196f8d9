"""`flowlog insights install`: saved queries as CloudWatch query definitions.

moto 5.2.5 has no query definitions (PutQueryDefinition and
DescribeQueryDefinitions answer HTTP 500), so the proxy's inspect hook plays
that part of CloudWatch here, by the API reference: an id is created when
none is given and updated when it is, names are listed by prefix, a page at
a time. The calls still travel over real HTTP through botocore.
"""

from __future__ import annotations

import uuid

import orjson
import pytest
from aiohttp import web

from flowlog.insights.saved import list_saved_queries
from tests.support.cloudwatch_proxy import AMZ_JSON, Call

pytestmark = pytest.mark.cloudwatch


def answer(body: dict, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=AMZ_JSON)


class QueryDefinitions:
    """The query-definition part of CloudWatch Logs, for the proxy's inspect hook."""

    def __init__(self, page_size: int = 3) -> None:
        self.page_size = page_size
        self.definitions: dict[str, dict] = {}

    def __call__(self, call: Call) -> web.Response | None:
        body = call.body
        if call.operation == "PutQueryDefinition":
            definition_id = body.get("queryDefinitionId")
            if definition_id and definition_id not in self.definitions:
                error = {"__type": "ResourceNotFoundException", "message": "no such definition"}
                return answer(error, 400)
            definition_id = definition_id or str(uuid.uuid4())
            fields = ("name", "queryString", "logGroupNames", "parameters")
            self.definitions[definition_id] = {
                "queryDefinitionId": definition_id,
                **{key: body[key] for key in fields if key in body},
            }
            return answer({"queryDefinitionId": definition_id})
        if call.operation == "DescribeQueryDefinitions":
            prefix = body.get("queryDefinitionNamePrefix", "")
            matching = [d for d in self.definitions.values() if d["name"].startswith(prefix)]
            start = int(body.get("nextToken", 0))
            end = start + min(body.get("maxResults", 1000), self.page_size)
            page: dict = {"queryDefinitions": matching[start:end]}
            if end < len(matching):
                page["nextToken"] = str(end)
            return answer(page)
        return None

    def named(self) -> dict[str, dict]:
        return {d["name"]: d for d in self.definitions.values()}


@pytest.fixture
def definitions(cloudwatch_proxy, monkeypatch) -> QueryDefinitions:
    monkeypatch.delenv("CLUSTER_NAME", raising=False)
    store = QueryDefinitions()
    store.definitions["other"] = {
        "queryDefinitionId": "other",
        "name": "someone-else/errors",
        "queryString": "fields @message",
    }
    cloudwatch_proxy.inspect = store
    return store


def install(flowlog, proxy, *extra: str):
    return flowlog(
        "insights",
        "install",
        "--cloudwatch-endpoint",
        proxy.endpoint,
        "--region",
        "us-west-2",
        *extra,
    )


def test_every_saved_query_becomes_a_definition(flowlog, cloudwatch_proxy, definitions):
    outcome = install(flowlog, cloudwatch_proxy, "--cluster", "prod")
    assert outcome.status == 0, outcome.stderr
    saved = list_saved_queries()
    installed = definitions.named()
    assert set(installed) == {f"flowlog/{q.name}" for q in saved} | {"someone-else/errors"}
    for query in saved:
        definition = installed[f"flowlog/{query.name}"]
        assert definition["logGroupNames"] == ["/aws/eks/prod/cluster"]
        assert definition["queryString"] == f"# {query.description}\n{query.body}"
        wanted = [{"name": p.name, "description": p.description} for p in query.parameters]
        assert definition.get("parameters", []) == wanted
    assert installed["flowlog/pod-flows"]["parameters"][0]["name"] == "ip"
    assert [line.split()[0] for line in outcome.stdout.splitlines()] == ["created"] * len(saved)


def test_installing_again_duplicates_nothing(flowlog, cloudwatch_proxy, definitions):
    assert install(flowlog, cloudwatch_proxy, "--cluster", "prod").status == 0
    first = dict(definitions.definitions)
    puts = len(cloudwatch_proxy.calls_of("PutQueryDefinition"))
    again = install(flowlog, cloudwatch_proxy, "--cluster", "prod")
    assert again.status == 0, again.stderr
    assert definitions.definitions == first
    assert len(cloudwatch_proxy.calls_of("PutQueryDefinition")) == puts  # nothing to change
    assert {line.split()[0] for line in again.stdout.splitlines()} == {"unchanged"}
    # Definitions were listed by prefix, a page at a time.
    describes = cloudwatch_proxy.calls_of("DescribeQueryDefinitions")
    assert {call.body["queryDefinitionNamePrefix"] for call in describes} == {"flowlog/"}
    assert any("nextToken" in call.body for call in describes)


def test_a_changed_group_updates_the_definitions_in_place(flowlog, cloudwatch_proxy, definitions):
    assert install(flowlog, cloudwatch_proxy, "--cluster", "prod").status == 0
    ids = {name: d["queryDefinitionId"] for name, d in definitions.named().items()}
    outcome = install(flowlog, cloudwatch_proxy, "--log-group", "/custom/flows")
    assert outcome.status == 0, outcome.stderr
    after = definitions.named()
    assert {name: d["queryDefinitionId"] for name, d in after.items()} == ids
    assert {
        tuple(d.get("logGroupNames", [])) for n, d in after.items() if n.startswith("flowlog/")
    } == {("/custom/flows",)}
    updates = [
        c for c in cloudwatch_proxy.calls_of("PutQueryDefinition") if "queryDefinitionId" in c.body
    ]
    assert len(updates) == len(list_saved_queries())
    assert after["someone-else/errors"]["queryString"] == "fields @message"


def test_cloudwatch_errors_are_one_line(flowlog, cloudwatch_proxy, monkeypatch):
    """moto itself answers PutQueryDefinition with HTTP 500: a failure, said in one line."""
    monkeypatch.delenv("CLUSTER_NAME", raising=False)
    outcome = install(flowlog, cloudwatch_proxy, "--cluster", "prod")
    assert outcome.status == 1
    assert len(outcome.stderr.splitlines()) == 1
    assert outcome.stderr.startswith("flowlog: error: ")
