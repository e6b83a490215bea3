"""Train the natural organism on CPU (Hydra app; config conf/experiment/train_natural_organism.yaml).

    python experiments/train_natural_organism.py                                # the shipped recipe
    python experiments/train_natural_organism.py seed=1 out=/tmp/natural
    python experiments/train_natural_organism.py out=layerprobe/organism/natural_weights   # replace it

Trains from scratch (layerprobe.organism.natural), saves weights, tokenizer, processor and
natural_organism.json, then reloads the checkpoint the way users do (``load_model``) and records
the greedy-decoding accuracy on the val and test splits, overall and per question type, scored
with the task's metric, in natural_organism.json.
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

from layerprobe.organism.natural import RECIPE_FILE, NaturalSpec

ConfigStore.instance().store(name="natural_spec", node=asdict(NaturalSpec()))


@hydra.main(version_base=None, config_path="../conf/experiment", config_name="train_natural_organism")
def main(cfg: DictConfig) -> None:
    from layerprobe.organism.natural import decoded_accuracy, load, train_natural

    c = OmegaConf.to_container(cfg, resolve=True)
    out = Path(c.pop("out") or Path(HydraConfig.get().runtime.output_dir) / "natural_organism")
    spec = NaturalSpec(**c)
    train_natural(spec, out=out)
    loaded = load(path=out)
    t = time.time()
    path = out / RECIPE_FILE
    meta = json.loads(path.read_text())
    meta["decoded"] = {split: decoded_accuracy(loaded, split) for split in ("val", "test")}
    meta["decoded"]["seconds"] = round(time.time() - t, 1)
    path.write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta["decoded"]))
    print(f"natural organism saved to {out}")


if __name__ == "__main__":
    main()
