"""Train the model organism on CPU (Hydra app; config conf/experiment/train_organism.yaml).

    python experiments/train_organism.py                                   # the shipped recipe
    python experiments/train_organism.py planted=[1,5,9,20] seed=1 out=/tmp/org
    python experiments/train_organism.py out=layerprobe/organism/weights   # rebuild the shipped one

Runs the recipe of layerprobe.organism.train (tied shallow readers -> untied -> grow to 32 layers),
saves the organism (weights, tokenizer, processor, layerprobe_organism.json), then reloads it the
way users do (planted mask applied on load) and records its held-out test accuracy and the
accuracy drop of every single-layer knockout in layerprobe_organism.json.

The recipe's keys and defaults are ``TrainSpec``'s, registered here as the config ``train_spec``
that the yaml extends: without arguments the app trains with exactly the settings recorded for
the shipped organism, and no second copy of them can drift.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from layerprobe.models.planted import ORGANISM_FILE
from layerprobe.organism.train import TrainSpec

ConfigStore.instance().store(name="train_spec", node=asdict(TrainSpec()))


@hydra.main(version_base=None, config_path="../conf/experiment", config_name="train_organism")
def main(cfg: DictConfig) -> None:
    import torch

    import layerprobe.organism as organism
    from layerprobe.organism.train import knockout_profile, train_organism

    c = OmegaConf.to_container(cfg, resolve=True)
    out = Path(c.pop("out") or Path(HydraConfig.get().runtime.output_dir) / "organism")
    test_n = c.pop("test_n")
    check = c.pop("knockout_check")
    spec = TrainSpec(**c)
    meta = train_organism(spec, out=out)
    torch.set_num_threads(spec.threads)
    loaded = organism.load(path=out)
    t = time.time()
    prof = knockout_profile(loaded, n=test_n) if check else None
    path = out / ORGANISM_FILE
    meta = json.loads(path.read_text())
    if prof is not None:
        meta["test"] = {"n": prof["n"], "accuracy": round(prof["baseline"], 4),
                        "knockout_drop_points": prof["drops"], "seconds": round(time.time() - t, 1)}
        path.write_text(json.dumps(meta, indent=1) + "\n")
        planted = set(spec.planted)
        others = [l for l, d in enumerate(prof["drops"]) if l not in planted and d != 0]
        print(json.dumps({"test_accuracy": prof["baseline"],
                          "planted_drops": {l: prof["drops"][l] for l in sorted(planted)},
                          "non_planted_layers_with_any_change": others}))
    print(f"organism saved to {out}")


if __name__ == "__main__":
    main()
