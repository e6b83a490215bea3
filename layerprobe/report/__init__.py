"""One self-contained page per run folder or multirun folder: ``report.html``.

    from layerprobe.report import write_report
    write_report("runs/sweep/organism/organism/image_text")       # a sweep run (+ its discovery)
    write_report("runs/eval/organism")                             # an eval directory: every method
    write_report("runs/multirun/sweep")                            # a multirun: every run below, merged
    write_report("runs/paper", extra=[("Paper table", paper_df)])  # extra sections first, after the identity

``write_report(folder, extra=(), title=None) -> Path`` reads what the folder holds (every
``results.jsonl`` below it, the ``summary.csv``, ``discovery.csv``, layer profiles, ``timing.json``
and figures the commands wrote) and writes ``<folder>/report.html``: the runs' identity (model,
data, knockout or method, versions, command), the masking curves with their CIs, each discovery
with its exported profile, the comparison against vanilla with paired CIs and latency ratios,
the option curves, the flipped answers and the attention heatmaps, each where the folder has
them. ``extra`` is a sequence of ``(title, content)``; content is a pandas DataFrame (a table), a
matplotlib Figure or PNG bytes (embedded), a string (shown as preformatted text, e.g. Markdown),
or a list of those. Figures are PNG data URIs, every string from data is escaped, and a
Content-Security-Policy forbids any request: the page opens offline, anywhere.
``layerprobe-sweep``, ``layerprobe-eval``, ``layerprobe-discover`` and ``layerprobe-plot`` write it
when they end.
"""

from layerprobe.report.page import Section
from layerprobe.report.write import write_report

__all__ = ["Section", "write_report"]
