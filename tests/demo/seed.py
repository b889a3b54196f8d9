"""What the seed's "Stars demo of network policy" says each step allows, from its text.

Written down here from the seed, not taken from ``flowlog.demo``, so that the
demo is checked against the seed rather than against itself.
"""

from __future__ import annotations

UI, CLIENT, FRONTEND, BACKEND = "management-ui", "client", "frontend", "backend"
STEPS = (1, 2, 3, 4, 5)
# Who probes whom: the UI watches the other three; each of them tries the other two.
PROBES = (
    (UI, CLIENT),
    (UI, FRONTEND),
    (UI, BACKEND),
    (CLIENT, FRONTEND),
    (CLIENT, BACKEND),
    (FRONTEND, BACKEND),
    (FRONTEND, CLIENT),
    (BACKEND, FRONTEND),
    (BACKEND, CLIENT),
)
PORTS = {CLIENT: 9000, FRONTEND: 80, BACKEND: 6379}
NAMESPACES = {UI: "management-ui", CLIENT: "client", FRONTEND: "stars", BACKEND: "stars"}
POLICIES = {"default-deny", "allow-ui", "backend-policy", "frontend-policy"}


def seed_allows(step: int, source: str, target: str) -> bool:
    """Whether ``source`` reaches ``target`` once the seed's step ``step`` is applied."""
    if step == 1:
        return True  # "Each node has full communication access to all other nodes."
    # Step 2, default-deny in stars and client, isolates every probed pod.
    if source == UI:
        return step >= 3  # allow-ui: "the management user interface can reach the nodes again"
    if (source, target) == (FRONTEND, BACKEND):
        return step >= 4  # backend-policy: "the front-end can communicate with the back-end"
    if (source, target) == (CLIENT, FRONTEND):
        return step >= 5  # frontend-policy: "the client can communicate to the front-end"
    return False  # "the nodes cannot communicate with each other"


def seed_outcome() -> dict[tuple[int, str, str], bool]:
    return {
        (step, source, target): seed_allows(step, source, target)
        for step in STEPS
        for source, target in PROBES
    }
