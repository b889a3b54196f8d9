"""The eBPF data plane: tc programs, policy maps, and the veths they sit on."""
