#!/usr/bin/env bash
# libnordf setup for Debian 12: installs every dependency, checks that LibTorch will load
# OpenBLAS, then configures and builds libnordf, its apps, benchmarks and tests in Release.
# Idempotent: packages already installed are skipped and the build is incremental.
#
# Usage: scripts/setup.sh [TARGET ...]   builds only the named CMake targets (for example
#        nordf-basic) and what they need; with none, everything.
# Environment: NORDF_BUILD_DIR (default: build), NORDF_JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR=${NORDF_BUILD_DIR:-build}
JOBS=${NORDF_JOBS:-$(nproc)}

PACKAGES=(
  build-essential cmake pkg-config ccache
  libtorch-dev libfmt-dev nlohmann-json3-dev catch2 libstb-dev libcli11-dev zlib1g-dev
  libgloo-dev libmatio-dev libplplot-dev plplot-driver-cairo
  libopenblas0-pthread
  dataset-fashion-mnist
  # test and benchmark oracles only; never loaded by libnordf
  python3-torch python3-torchvision python3-sklearn
)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    SUDO=sudo
  fi
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "all ${#PACKAGES[@]} packages already installed"
fi

# LibTorch links libblas.so.3, which Debian resolves through update-alternatives. The reference
# BLAS makes ConvNeXt training about 15x slower, so refuse to continue unless it is OpenBLAS.
torch_cpu=$(ldconfig -p | awk '/libtorch_cpu\.so/ {p = $NF} END {print p}')
[ -n "$torch_cpu" ] || die "libtorch_cpu.so not found; is libtorch-dev installed?"
for lib in libblas.so.3 liblapack.so.3; do
  path=$(ldd "$torch_cpu" | awk -v l="$lib" '$1 == l {print $3}')
  real=$(readlink -f "$path" 2>/dev/null || true)
  case "$real" in
    *openblas*) log "$lib -> $real (OpenBLAS)" ;;
    *) die "LibTorch would load $lib from '${real:-nowhere}', not OpenBLAS (about 15x slower training).
  Fix: apt-get install libopenblas0-pthread && update-alternatives --auto ${lib}-x86_64-linux-gnu" ;;
  esac
done

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
if (($#)); then
  log "building $* in $BUILD_DIR with $JOBS jobs"
  cmake --build "$BUILD_DIR" -j "$JOBS" --target "$@"
else
  log "building everything in $BUILD_DIR with $JOBS jobs"
  cmake --build "$BUILD_DIR" -j "$JOBS"
fi
log "done"
