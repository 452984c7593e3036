#!/usr/bin/env bash
# Data-parallel cost on one machine: the same nordf-basic run as 1 process using every core
# (batch B) and as 2 processes x (cores / 2) threads over Gloo (batch B/2 each, the same global
# batch), alternating, on the default configuration and on a larger one. Prints wall time, peak
# RSS, the training time per epoch, ID accuracy, the best near-OOD AUROC and the communication
# share that rank 0 reports.
# Usage: bench/distributed.sh [BUILD_DIR] [ROUNDS]
set -euo pipefail
build=${1:-build}
rounds=${2:-1}
basic="$build/apps/nordf-basic"
[ -x "$basic" ] || { echo "distributed.sh: $basic is not built" >&2; exit 1; }
out=$(mktemp -d /tmp/nordf-dist-bench.XXXXXX)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(date -u '+%Y-%m-%d %H:%M UTC'); outputs in $out"
larger=(--image-size 64 --epochs 1 --train-per-class 400 --test-per-class 200 --ood-limit 500)
one() {  # name, then nordf-basic arguments
  local name=$1; shift
  local dir="$out/$name"
  /usr/bin/time -f "wall %e s, peak RSS %M KiB (largest process)" "$basic" "$@" --out "$dir" >"$dir.log" 2>&1 ||
    { echo "$name failed, see $dir.log" >&2; exit 1; }
  printf '%s\n' "== $name: nordf-basic $*"
  grep -E "^epoch|communication|ID test accuracy|wall " "$dir.log" | sed 's/^/   /'
  /usr/bin/python3 - "$dir/ood/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
best = max(((r["near_mean"]["auroc"], k) for k, r in m["methods"].items() if "near_mean" in r), default=None)
if best:
    print(f"   best near-OOD AUROC {100 * best[0]:.2f} % ({best[1]})")
PY
}
for r in $(seq "$rounds"); do
  one "r$r-default-1x$(nproc)" --batch-size 32
  one "r$r-default-2x$(($(nproc) / 2))" --nproc 2 --batch-size 16
  one "r$r-larger-1x$(nproc)" "${larger[@]}" --batch-size 32
  one "r$r-larger-2x$(($(nproc) / 2))" "${larger[@]}" --nproc 2 --batch-size 16
done
