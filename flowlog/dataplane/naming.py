"""How the VPC CNI names a pod's host-side veth, which is where our programs go."""

from __future__ import annotations

import hashlib

VETH_PREFIX = "eni"


def host_veth_name(namespace: str, pod: str) -> str:
    """``eni`` + the first 11 hex characters of sha1("<namespace>.<pod>")."""
    digest = hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()
    return VETH_PREFIX + digest[:11]


def is_pod_veth(ifname: str) -> bool:
    return ifname.startswith(VETH_PREFIX)
