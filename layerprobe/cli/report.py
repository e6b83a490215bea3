"""The report page (``layerprobe.report``) at the end of every command, and once more when a
multirun ends, over all of its runs.

    write_page(run_dir)                      # what layerprobe-sweep/-eval/-discover/-plot call last
    hydra.callbacks.write_report._target_: layerprobe.cli.report.WriteReport   # conf/sweep.yaml, eval.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback

from layerprobe.errors import LayerprobeError

log = logging.getLogger("layerprobe.report")


def write_page(folder) -> Path:
    from layerprobe.report import write_report

    path = write_report(folder)
    log.info("report: %s", path)
    return path


def holds_runs(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("results.jsonl"))


class WriteReport(Callback):
    """Hydra callback: after the last job of a multirun, ``report.html`` in its sweep folder. The
    jobs' results are on disk by then, so a report that cannot be written is logged, not fatal."""

    def on_multirun_end(self, config, **kwargs) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        if not holds_runs(folder):
            return
        try:
            print(f"report: {write_page(folder)}")
        except LayerprobeError as err:
            log.error("no report for %s: %s", folder, err)
