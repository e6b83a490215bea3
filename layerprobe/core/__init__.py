"""The intervention core: token layout, the registered edge sets, the attention dispatcher
transformers calls, knockout, last-row attention, and timed greedy generation. Imports nothing
above it (models, methods, sweep, evaluation, analysis, cli)."""
