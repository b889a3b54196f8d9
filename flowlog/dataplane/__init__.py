"""The eBPF data plane: tc programs, policy maps, and the veths they sit on."""

from flowlog.dataplane.attribution import Attribution
from flowlog.dataplane.dataplane import Dataplane

__all__ = ["Attribution", "Dataplane"]
