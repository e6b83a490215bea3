"""``layerprobe-sweep``'s library: conditions, engines, the sweep loop, latency and summaries."""
