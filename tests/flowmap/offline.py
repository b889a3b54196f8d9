"""What in a page could make a browser fetch something: for pages that must need nothing."""

from __future__ import annotations

import re

# Attributes and CSS or script forms that load a resource, with what they load.
LOADING = re.compile(
    r"""(?ix)
    (?<=\s)(?:src|href|xlink:href|action|poster|data|srcset|background)=["']?(?P<attribute>[^"'\s>]*)
    | url\(\s*["']?(?P<css>[^"')\s]*)
    | @import\s+["']?(?P<css_import>[^"';\s]*)
    | \bimport\s*\(\s*["'](?P<dynamic_import>[^"']*)
    | \bimport\s+[^;]*?\bfrom\s+["'](?P<static_import>[^"']*)
    | \b(?:fetch|XMLHttpRequest|WebSocket|EventSource|sendBeacon|importScripts)\b(?P<api>)
    """
)
INSIDE = re.compile(r"(?i)^(?:#|data:|$)")  # the page's own elements, inline data


def external_references(page: str) -> list[str]:
    """Every reference to something outside the page (another file, a host), every
    network API named, and every address of a host; ``#id`` and inline data are fine."""
    found = []
    for match in LOADING.finditer(page):
        target = next((value for value in match.groupdict().values() if value is not None), "")
        if match.group("api") is not None or not INSIDE.match(target):
            found.append(match.group(0))
    return found + re.findall(r"(?i)(?:https?:)?//[a-z0-9-]+\.[a-z0-9.-]+", page)
