"""flowlog: Kubernetes network-policy flow logs from eBPF verdicts."""

import os

# flowlog does no linear algebra; without this, numpy's OpenBLAS starts a
# thread per CPU at import, and they spin for a while whenever they wake.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
