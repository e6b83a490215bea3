#!/usr/bin/env bash
# The whole pipeline on the natural organism, as docs/natural-organism.md reports it:
#   bash experiments/natural_organism_pipeline.sh [OUT=runs/natural] [MODEL_PATH=null]
# 1. sweeps of the test split for every edge set, and of the val split for the default one;
# 2. discovery on each (effect=accuracy, as the report's tables were made; the rest its defaults);
# 3. method settings chosen on val (contrastive: target x percentile x scale, with the val profile);
# 4. the test split answered once by vanilla, contrastive (each target, its val-chosen setting),
#    DoLa and ViCrop with their defaults, compared in OUT/eval_test/comparison.*.
# Step 4 reads OUT/chosen.env, which step 3 writes (the best val accuracy per target; ties: the
# first in the grid's order), so nothing about the test split feeds back into a setting.
set -euo pipefail
OUT=${1:-runs/natural}
MODEL_PATH=${2:-null}
M="model=natural_organism model.path=$MODEL_PATH data=scenes progress=false"
D="effect=accuracy"
mkdir -p "$OUT"

for mask in image_text image_last image_question image_prompt window9 window9_last; do
  layerprobe-sweep $M mask=$mask run_dir="$OUT/sweep_test/$mask"
  layerprobe-discover run="$OUT/sweep_test/$mask" $D   # no review layer found: review_layer: null, exit 0
done
layerprobe-sweep $M data.split=val run_dir="$OUT/sweep_val/image_text"
layerprobe-discover run="$OUT/sweep_val/image_text" $D ${REVIEW_LAYER:+review_layer=$REVIEW_LAYER}
PROFILE="$OUT/sweep_val/image_text/profile.yaml"
if [ "$(python -c "import yaml; print(yaml.safe_load(open('$PROFILE'))['review_layer'])")" = None ]; then
  # No significant drop in the late part on val: contrastive attention still needs a review
  # layer, so it is set by hand to the late layer whose knockout lowers val accuracy most (ties:
  # the first), read from the val discovery table: still nothing from the test split. The
  # profile discovery just wrote is replaced (it is unedited, so no overwrite=true is needed).
  REVIEW_LAYER=$(python -c "import pandas as pd; d = pd.read_csv('$OUT/sweep_val/image_text/discovery.csv'); \
d = d[d.part == 'late']; print(int(d.loc[d['drop'].idxmax(), 'layer']))")
  echo "val: no significant late drop; review layer set by hand to $REVIEW_LAYER (largest late drop on val)"
  layerprobe-discover run="$OUT/sweep_val/image_text" $D review_layer=$REVIEW_LAYER
fi

# 3. validation grid
layerprobe-eval -m $M data.split=val method=vanilla eval_dir="$OUT/eval_val"
layerprobe-eval -m $M data.split=val method=contrastive profile_file="$PROFILE" \
  method.target=attention,values,hidden method.percentile=20,50,80 method.scale=0,0.5 \
  'label=contrastive_${method.target}_p${method.percentile}_s${method.scale}' eval_dir="$OUT/eval_val"
python - "$OUT" <<'EOF'
import sys
import pandas as pd
out = sys.argv[1]
c = pd.read_csv(f"{out}/eval_val/comparison.csv")
c = c[(c.benchmark == "scenes") & c.method.str.startswith("contrastive_")]
lines = []
for target in ("attention", "values", "hidden"):
    rows = c[c.method.str.startswith(f"contrastive_{target}_")]
    best = rows.loc[rows.accuracy.idxmax()]  # idxmax: the first of equal maxima
    p, s = best.method.split("_p")[1].split("_s")
    lines.append(f"{target.upper()}_P={p}\n{target.upper()}_S={s}")
    print(f"val: best {target}: percentile {p}, scale {s}, accuracy {best.accuracy:.4f}")
open(f"{out}/chosen.env", "w").write("\n".join(lines) + "\n")
EOF
. "$OUT/chosen.env"

# 4. the test split, once
layerprobe-eval -m $M method=vanilla,dola,vicrop eval_dir="$OUT/eval_test"
for t in attention values hidden; do
  T=${t^^}; P="${T}_P"; S="${T}_S"
  layerprobe-eval $M method=contrastive profile_file="$PROFILE" method.target=$t method.percentile=${!P} \
    method.scale=${!S} label=contrastive_$t eval_dir="$OUT/eval_test" run_dir="$OUT/eval_test/scenes/contrastive_$t"
done
