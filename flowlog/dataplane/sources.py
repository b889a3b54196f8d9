"""Where the PolicyEndpoints the data plane enforces come from.

A source hands the data plane a snapshot of named documents whenever it
says something changed; the data plane accepts or rejects each new or
changed one on its own (a rejected document's earlier version stays in
force) and tells the source what it rejected. Two sources exist: a
directory of YAML/JSON files (``--policy-dir``, here) and the Kubernetes
API (``flowlog.cluster.policies``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import watchfiles

from flowlog.config import ConfigError
from flowlog.dataplane.policy import PolicyError, is_policy_file

# A document as a source holds it: a file's bytes, an object from the API, or
# why it could not be read.
Content = bytes | Mapping[str, Any] | PolicyError


class PolicySource(Protocol):
    description: str  # for people: "--policy-dir /etc/flowlog/policies"
    # Whether a bad document at start is a configuration error (a file the user
    # wrote) rather than something to reject and report (an object in the API).
    strict_at_start: bool

    def check(self) -> None:
        """Raise ConfigError if the source cannot work at all."""

    def snapshot(self) -> dict[str, Content]:
        """Every document now, by name; raises PolicyError if none can be read."""

    def changes(self) -> AsyncIterator[object]:
        """Something changed; subscribed once the iterator first runs."""

    def rejected(self, name: str, error: str) -> None:
        """``name``'s latest version was not enforced, for ``error`` (one line)."""


class PolicyDirectory:
    """PolicyEndpoint files in a directory, watched (a mounted ConfigMap included)."""

    strict_at_start = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = f"--policy-dir {self.path}"

    def check(self) -> None:
        if not self.path.exists():
            raise ConfigError(f"--policy-dir {self.path}: does not exist")
        if not self.path.is_dir():
            raise ConfigError(f"--policy-dir {self.path}: not a directory")

    def snapshot(self) -> dict[str, Content]:
        found: dict[str, Content] = {}
        try:
            paths = sorted(self.path.iterdir())
        except OSError as error:
            problem = f"--policy-dir {self.path}: cannot list: {error.strerror}"
            raise PolicyError(problem) from None
        for path in paths:
            if not is_policy_file(path) or not path.is_file():
                continue
            try:
                found[str(path)] = path.read_bytes()
            except OSError as error:
                found[str(path)] = PolicyError(f"{path}: cannot read: {error.strerror}")
        return found

    def changes(self) -> AsyncIterator[object]:
        # Reading the whole directory on any change also covers ConfigMap
        # volumes, whose files change by a symlink swap.
        return watchfiles.awatch(self.path, watch_filter=None)

    def rejected(self, name: str, error: str) -> None:
        """The data plane's log line and metric are all a file's author gets."""
