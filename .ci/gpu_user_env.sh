#!/usr/bin/env bash
# The configuration a GPU user gets: a fresh venv with torch and torchvision from the registry (the
# CUDA builds, which run on the CPU too), the newest transformers and the project, everything else
# as constraints.txt pins it; then the core tests with every family's REAL processor (video
# processor included) saved to a directory and loaded through load_model(path).
#
#   bash .ci/gpu_user_env.sh [VENV [CONSTRAINTS]]   # VENV defaults to /tmp/ci-gpu-user; run from anywhere
#
# VENV must be a new path or a venv this script made before (it holds a marker file): nothing
# else is ever removed.
#
# The venv is a few GB: pip's cache (PIP_CACHE_DIR, honoured as set) keeps the downloads. If the
# registry refuses torch/torchvision (no network, no such release) the step prints
# "ci: gpu-user env skipped: <reason>" and exits 0; any other failure exits non-zero. The last
# line is "ci: env gpu-user: transformers <v>, torch <v>, torchvision <v>: <N> passed".
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-/tmp/ci-gpu-user}
constraints=${2:-$PWD/constraints.txt}
marker=.layerprobe-ci-gpu-user   # in every venv this script makes: the one thing it may remove
torch_pins=(torch==2.14.1 torchvision==0.29.1)
if [ -e "$venv" ] && [ ! -e "$venv/$marker" ]; then
  echo "ci: gpu-user: $venv exists and is not a venv this script made (no $marker in it): give a new path" >&2
  exit 2
fi
log=
pins=
keep_log=0   # set where a failure names the log
trap 'rm -f "$pins"; [ "$keep_log" = 1 ] || rm -f "$log"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ -n "${PIP_CACHE_DIR:-}" ]; then echo "ci: gpu-user: pip cache $PIP_CACHE_DIR"; fi

# a few lines of a pip log: the ones that say what went wrong, not the index's location notes
pip_errors() {
  grep -v "^WARNING: Location '" "$1" | grep -E "ERROR|Error|error" | tail -5 || true
}

t0=$SECONDS
rm -rf "$venv"   # absent, or one of ours (checked above)
python3.11 -m venv "$venv"
touch "$venv/$marker"
pip=("$venv/bin/python" -m pip)
log=$(mktemp -t ci-gpu-user-pip.XXXXXX)
# the pins of everything but torch (registry builds here) and transformers/tokenizers (the newest)
pins=$(mktemp -t ci-gpu-user-constraints.XXXXXX)
grep -vE '^(torch|transformers|tokenizers|kernels)==' "$constraints" > "$pins"
echo "ci: gpu-user: installing ${torch_pins[*]} into $venv"
if ! "${pip[@]}" install -c "$pins" "${torch_pins[@]}" >"$log" 2>&1; then
  # the registry refused: no network (said first: pip then also finds no version), or it has
  # no such release; anything else is a failure
  offline="Failed to establish a new connection: [^')]*|Network is unreachable|Temporary failure in name resolution|Name or service not known|HTTP error 40[34][^,]*|40[34] Client Error[^,]*"
  missing='No matching distribution found.*|Could not find a version that satisfies.*'
  for refused in "$offline" "$missing"; do
    if reason=$(grep -v "^WARNING: Location '" "$log" | grep -Eom1 "$refused"); then
      reason=$(sed -E 's/ \(from versions: ([^)]{60})[^)]*\)/ (from versions: \1...)/' <<<"$reason" | cut -c1-300)
      echo "ci: gpu-user env skipped: the registry refused ${torch_pins[*]}: $reason"
      rm -rf "$venv"
      exit 0
    fi
  done
  keep_log=1
  echo "ci: gpu-user: installing ${torch_pins[*]} failed (pip's log: $log):" >&2
  pip_errors "$log" >&2
  exit 1
fi
t1=$SECONDS
echo "ci: gpu-user: torch and torchvision installed in $((t1 - t0)) s"
# the newest transformers the project admits, and the project with its test extras, the rest pinned
if ! "${pip[@]}" install -q -c "$pins" --upgrade "transformers<6" -e ".[test]" >"$log" 2>&1; then
  keep_log=1
  echo "ci: gpu-user: installing transformers and the project failed (pip's log: $log):" >&2
  pip_errors "$log" >&2
  exit 1
fi
versions=$("$venv/bin/python" -c 'import torch, torchvision, transformers
print(f"transformers {transformers.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}")')
echo "ci: gpu-user: installed in $((SECONDS - t0)) s ($versions)"

t2=$SECONDS
# the real-processor file runs the knockout reference and a 2-layer sweep on every saved family;
# test_compat checks the cache keyword and the organism fingerprint under this torch build
tests=(tests/test_real_processors.py tests/test_compat.py)
out=$(mktemp -t ci-gpu-user-pytest.XXXXXX)
set +e
"$venv/bin/python" -m pytest -q -m core -p no:cacheprovider "${tests[@]}" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
n=$(grep -Eo '[0-9]+ passed' "$out" | tail -1 | grep -Eo '[0-9]+' || echo 0)
rm -f "$out"
echo "ci: gpu-user: tests took $((SECONDS - t2)) s (pytest exit $rc)"
if [ "$rc" -ne 0 ] || [ "$n" -eq 0 ]; then
  echo "ci: gpu-user: the core tests failed or passed none (exit $rc, $n passed)" >&2
  exit 1
fi
echo "ci: env gpu-user: $versions: $n passed"
