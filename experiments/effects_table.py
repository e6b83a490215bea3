"""Every effect of every layer of a sweep, side by side: the table docs/natural-organism.md shows.

    python experiments/effects_table.py runs/sweep/natural_organism/scenes/image_text
    python experiments/effects_table.py RUN [RUN ...] --effects accuracy prob_change

One markdown row per (benchmark, layer): per effect its estimate with the 95% bootstrap CI and
q, starred where discovery (that effect's defaults) calls the layer; then, per effect, the
fusion and review layers it finds. Each effect's q-values come from its own discovery (one FDR
family per effect, as ``layerprobe-discover effect=...`` computes them). Where the sweep has
control rows (``layerprobe-sweep control=text_keys``), each effect's cell also gives the control's
estimate with its CI and q, and the knockout-versus-control q; the discoveries are then given
without and with ``require_specific=true``.
"""

from __future__ import annotations

import argparse

from layerprobe.analysis.discovery import discover
from layerprobe.analysis.effects import EFFECTS


def cell(row) -> str:
    text = f"{row['effect']:+.4g} [{row['ci_low']:+.3g}, {row['ci_high']:+.3g}] q={row['q']:.2g}"
    if "control_effect" in row and row["control_effect"] == row["control_effect"]:
        text += (f"; control {row['control_effect']:+.3g} [{row['control_ci_low']:+.3g}, "
                 f"{row['control_ci_high']:+.3g}] q={row['control_q']:.2g}; vs control q={row['specific_q']:.2g}")
    return text + (" *" if row["significant"] else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--effects", nargs="+", default=list(EFFECTS), choices=list(EFFECTS))
    args = parser.parse_args()
    found = {e: discover(args.runs, effect=e) for e in args.effects}
    print("| benchmark | layer | " + " | ".join(f"{e} (min_effect {found[e].settings['min_effect']:g})"
                                                for e in args.effects) + " |")
    print("|---|---|" + "---|" * len(args.effects))
    frames = {e: f.evidence.set_index(["benchmark", "layer"]) for e, f in found.items()}
    for key in frames[args.effects[0]].index:
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cell(frames[e].loc[key]) for e in args.effects) + " |")
    print()
    for e, f in found.items():
        print(f"{e} (min_effect {f.settings['min_effect']:g}): fusion layers {f.fusion_layers}, "
              f"review layer {f.review_layer}")
        if "control_effect" in f.evidence:
            specific = discover(args.runs, effect=e, require_specific=True)
            print(f"{e} with require_specific=true: fusion layers {specific.fusion_layers}, "
                  f"review layer {specific.review_layer}")


if __name__ == "__main__":
    main()
