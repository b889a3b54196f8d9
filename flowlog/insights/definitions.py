"""Saved queries as CloudWatch query definitions, named ``flowlog/<name>``.

The console shows ``/`` in a definition's name as a folder, so they all sit in
a ``flowlog`` folder. Installing is idempotent: existing definitions are found
by name (DescribeQueryDefinitions with the prefix) and updated in place by
their id; definitions already up to date are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from flowlog.insights.saved import SavedQuery

FOLDER = "flowlog/"
PAGE_SIZE = 1000  # the most DescribeQueryDefinitions returns at once


@dataclass(frozen=True)
class Installed:
    name: str
    action: str  # created, updated or unchanged
    definition_id: str


def existing_definitions(client: Any, prefix: str = FOLDER) -> Iterator[dict]:
    request: dict[str, Any] = {"queryDefinitionNamePrefix": prefix, "maxResults": PAGE_SIZE}
    while True:
        response = client.describe_query_definitions(**request)
        yield from response.get("queryDefinitions", [])
        token = response.get("nextToken")
        if not token:
            return
        request["nextToken"] = token


def install_definitions(
    client: Any, queries: Sequence[SavedQuery], log_group: str
) -> list[Installed]:
    by_name: dict[str, dict] = {}
    for definition in existing_definitions(client):
        by_name.setdefault(definition.get("name", ""), definition)
    installed = []
    for query in queries:
        name = FOLDER + query.name
        wanted: dict[str, Any] = {
            "name": name,
            "queryString": query.definition_text(),
            "logGroupNames": [log_group],
        }
        if query.parameters:
            wanted["parameters"] = [
                {"name": parameter.name, "description": parameter.description}
                for parameter in query.parameters
            ]
        current = by_name.get(name)
        if current is None:
            response = client.put_query_definition(**wanted)
            installed.append(Installed(name, "created", response["queryDefinitionId"]))
        elif _same(current, wanted):
            installed.append(Installed(name, "unchanged", current["queryDefinitionId"]))
        else:
            definition_id = current["queryDefinitionId"]
            client.put_query_definition(queryDefinitionId=definition_id, **wanted)
            installed.append(Installed(name, "updated", definition_id))
    return installed


def _same(current: dict, wanted: dict) -> bool:
    def parameters(definition: dict) -> list[tuple[str, str]]:
        return sorted(
            (parameter.get("name", ""), parameter.get("description", ""))
            for parameter in definition.get("parameters") or []
        )

    return (
        current.get("queryString") == wanted["queryString"]
        and list(current.get("logGroupNames") or []) == wanted["logGroupNames"]
        and parameters(current) == parameters(wanted)
    )
