"""flowlog: Kubernetes network-policy flow logs from eBPF verdicts."""

__version__ = "0.1.0"
