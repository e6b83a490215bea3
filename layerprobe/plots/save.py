"""Write one figure as PNG and PDF, atomically, and close it.

    fig, ax = plt.subplots()
    plot_masking_curves(summary, ax=ax)
    save_figure(fig, run_dir / "masking_curves")      # masking_curves.png + masking_curves.pdf
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, stem: str | Path, dpi: int = 200) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for ext in ("png", "pdf"):
        final = stem.with_suffix(f".{ext}")
        tmp = final.with_name(f".{final.stem}.tmp{os.getpid()}.{ext}")
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, final)
        written.append(final)
    plt.close(fig)
    return written
