"""``layerprobe-eval``'s library: one method over one benchmark, compared against vanilla."""
