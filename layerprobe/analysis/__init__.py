"""From results tables to conclusions: paired statistics, layer discovery and layer profiles."""
