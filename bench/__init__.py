"""flowlog's benchmarks (``make bench``): each prints its figures with their targets and
the ratio to a baseline measured in the same run."""
