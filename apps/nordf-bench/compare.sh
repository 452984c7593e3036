#!/usr/bin/env bash
# Times the training step of libnordf (nordf-bench) and of the Python prototype's step
# (prototype_step.py) on the same PyTorch build, in the prototype's configuration, alternating
# the two ROUNDS times so machine noise hits both; prints each measurement and the ratio.
# Usage: apps/nordf-bench/compare.sh [BUILD_DIR] [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-build}
rounds=${2:-3}
steps=${STEPS:-5}
cpp_args=(--backbone convnext_tiny --image-size 224 --batch-size 2 --channels 1024 --norm batch --recon-size 112 --decoder-width 256 --decoder-blocks 2
          --recon-loss perceptual --perceptual-network convnext_tiny --perceptual-layers 3 6 --grl-weight 0.01
          --steps "$steps" --warmup 2)
for r in $(seq "$rounds"); do
  c=$("$build/apps/nordf-bench" "${cpp_args[@]}" | awk '/^train step/ {print $3}')
  p=$(/usr/bin/python3 "$here/prototype_step.py" --steps "$steps" --warmup 2 | awk '{for (i = 1; i < NF; i++) if ($i ~ /^[0-9.]+$/ && $(i+1) == "ms") print $i}')
  awk -v r="$r" -v c="$c" -v p="$p" 'BEGIN {printf "round %d: libnordf %.1f ms/step, prototype %.1f ms/step, speed-up %.2fx\n", r, c, p, p / c}'
done
