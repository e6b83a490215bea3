"""Everything on disk: results tables, run merging, the resumable batch loop, shipped paths."""
