"""Where verdict events come from: ring buffers (ours or a pinned one) and replay files."""
