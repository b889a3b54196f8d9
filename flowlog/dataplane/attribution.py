"""The names behind the numbers in an event: endpoint_id -> pod, policy_id -> policy.

Numbers start at 1 (0 means "none" in an event) and are never reused within
a process, so an event still waiting in the ring buffer always names the pod
and policy it was judged for, even after they are gone.
"""

from __future__ import annotations

from collections.abc import Callable

ENDPOINT, POLICY = "endpoint", "policy"
# Told of every new number: (ENDPOINT or POLICY, number, (name, namespace)).
AddedCallback = Callable[[str, int, tuple[str, str]], None]


class Attribution:
    """``endpoints`` and ``policies`` tables; ``version`` changes whenever one grows."""

    def __init__(self, on_added: AddedCallback | None = None) -> None:
        self._on_added = on_added
        self.endpoints: dict[int, tuple[str, str]] = {}  # endpoint_id -> (pod, namespace)
        self.policies: dict[int, tuple[str, str]] = {}  # policy_id -> (policy, namespace)
        self.version = 0
        self._endpoint_ids: dict[tuple[str, str], int] = {}
        self._policy_ids: dict[tuple[str, str], int] = {}

    def endpoint_id(self, pod: str, namespace: str) -> int:
        return self._number(ENDPOINT, self._endpoint_ids, self.endpoints, (pod, namespace))

    def policy_id(self, policy: str, namespace: str) -> int:
        return self._number(POLICY, self._policy_ids, self.policies, (policy, namespace))

    def _number(
        self,
        kind: str,
        ids: dict[tuple[str, str], int],
        names: dict[int, tuple[str, str]],
        name: tuple[str, str],
    ) -> int:
        number = ids.get(name)
        if number is None:
            number = ids[name] = len(ids) + 1
            names[number] = name
            self.version += 1
            if self._on_added is not None:
                self._on_added(kind, number, name)
        return number
