#!/usr/bin/env bash
# What a first GPU session measures, as one command of at most 10 minutes on one H100 (80 GB):
#
#   bash experiments/gpu_check.sh --out runs/gpu_check        # on the GPU, from the repository, layerprobe installed
#   bash experiments/gpu_check.sh --cpu-smoke --out /tmp/gc   # CPU, tiny shapes: the same stages and table (CI)
#
# It ends with one table (also <out>/gpu_check.md and <out>/gpu_check.json; each stage's output in
# <out>/logs/<stage>.log). Every stage is its own process under `timeout`: one that outruns its
# budget is killed and marked "timed out", the next one runs, and the exit code is 1 if any stage
# did not pass. PYTHON=... picks the interpreter (default: python).
#
# Stage (budget on the GPU)
#   tests         60 s  pytest -m gpu: the gpu-marked tests
#   sweep        270 s  experiments/bench_sweep.py, naive vs fast engine, on random bf16 weights of the real
#                       LLaVA-1.5-7B shape (336-px image: 576 visual tokens, 2 samples) and LLaVA-1.6-Vicuna-7B
#                       shape (672-px image: 2,928 visual tokens, 1 sample), built on the GPU
#                       (layerprobe/models/real_shape.py): both times, the ratio, peak memory, agreement
#   contrastive  120 s  experiments/bench_contrastive.py at both shapes: contrastive attention against plain
#                       generation, latency (median of 7 rounds, ratio from 14 ABBA pairs) and peak memory
#   bf16         120 s  experiments/bf16_agreement.py --device cuda: fast vs naive answers in bf16 (organism's
#                       512 x 33, tiny LLaVA-1.5 / 1.6 16 x 33 each)
# Budgets sum to 570 s; with the table and the CUDA check ~10 s more: under 10 minutes whatever happens.
#
# The budgets, from FLOPs (H100 SXM: 990 dense bf16 TFLOP/s peak, ~400 reached by a 7B prefill;
# 3.35 TB/s of memory bandwidth). The 7B decoder costs 2 x 6.7e9 = 13.5 GFLOP per token; CLIP
# ViT-L/14-336, 0.35 TFLOP per 336-px view; a decode step reads the 14 GB of bf16 weights, ~4 ms.
# - LLaVA-1.5 prompt, ~650 tokens: prefill 8.8 TFLOP + 0.35 ~ 25 ms. Naive sweep = 33 x (prefill + 2 decode
#   steps) ~ 1.1 s a sample, fast ~ 0.1 s; with 6 fast sweeps between the naive chunks and 3 untimed
#   memory passes, 2 samples: ~4 s.
# - LLaVA-1.6 prompt, ~3,000 tokens: prefill 40.5 TFLOP + attention ~1.5 + 5 views 1.75 ~ 0.11 s; naive
#   sweep ~ 33 x 0.12 = 4 s, ~10 s with the fast runs and memory passes.
# - Building each 7B model on the GPU (7.06 B parameters initialised in place) ~ 5-20 s; imports ~10 s.
#   The sweep stage needs ~1 minute of its 4.5; the budget leaves room for a slower first kernel
#   compile or a slower card.
# - Contrastive, per shape: 2 warm-ups + 14 timed + 2 memory runs + 28 ABBA runs = 46 generations of
#   8 tokens (prefill + 7 decode steps): 1.5 ~ 55 ms each, 1.6 ~ 0.15 s: ~10 s plus two model builds.
# - bf16: the organism (4.5 M parameters) is bound by kernel launches: ~30 ms a generation, 33 x 32
#   batches ~ 35 s; the tiny models ~10 s. tests: two CUDA tests on a tiny model plus collection, ~20 s.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=gpu
out=runs/gpu_check
py=${PYTHON:-python}
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-smoke) mode=smoke ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    --out=*) out=${1#--out=} ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option $1 (use --cpu-smoke, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out/logs" || { echo "gpu_check: cannot create $out/logs" >&2; exit 2; }
if [ $mode = gpu ]; then
  if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: $py sees no CUDA device; on a CPU run: bash $0 --cpu-smoke" >&2
    exit 2
  fi
  device=(--device cuda); shapes=(); budgets=(60 270 120 120)
  sweep_opts=(); contrastive_opts=(--rounds 7); bf16_opts=()
else
  # the same code at tiny sizes; the budgets only stop a hang on a slow shared CPU
  device=(--device cpu); shapes=(--smoke); budgets=(600 600 600 600)
  sweep_opts=(--samples 1); contrastive_opts=(--rounds 1 --max-new-tokens 2)
  bf16_opts=(--organism-samples 8 --tiny-samples 1 --threads 1)
fi

stage() {  # name, budget in seconds, command...: its output and a closing record line in logs/<name>.log
  local name=$1 budget=$2 t0=$SECONDS rc
  shift 2
  echo "gpu_check: == $name (budget $budget s): $*"
  timeout -k 10 "$budget" "$@" >"$out/logs/$name.log" 2>&1
  rc=$?
  echo "# gpu_check stage=$name rc=$rc seconds=$((SECONDS - t0)) budget=$budget" >>"$out/logs/$name.log"
  echo "gpu_check: $name: exit $rc in $((SECONDS - t0)) s"
}

t_all=$SECONDS
stage tests "${budgets[0]}" "$py" -m pytest -m gpu -q -p no:cacheprovider tests
stage sweep "${budgets[1]}" "$py" experiments/bench_sweep.py --shapes llava-1.5-7b,llava-1.6-7b --skip-organism \
  "${device[@]}" --dtype bfloat16 "${shapes[@]}" "${sweep_opts[@]}"
stage contrastive "${budgets[2]}" "$py" experiments/bench_contrastive.py --skip-organism --methods vanilla,contrastive \
  --real-shapes llava15_7b,llava16_vicuna7b "${device[@]}" --dtype bfloat16 "${shapes[@]}" "${contrastive_opts[@]}"
stage bf16 "${budgets[3]}" "$py" experiments/bf16_agreement.py "${device[@]}" "${bf16_opts[@]}"
echo "gpu_check: all stages took $((SECONDS - t_all)) s"
"$py" experiments/gpu_check_table.py "$out" --mode "$mode"
