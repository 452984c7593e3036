#!/usr/bin/env bash
# Fuzzes libnordf's parsers of downloaded files with libFuzzer under AddressSanitizer and
# UndefinedBehaviorSanitizer (clang-14; see tests/fuzz/targets.h for the targets).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]      (default: 600 s, every target)
#
# Builds build-fuzz/ (only the parsers and the targets), then runs each target for the given time
# on a working copy of its seed corpus (tests/fuzz/corpus/<target>) with the pickle dictionary,
# on every core. New inputs that raise coverage are merged into the seed corpus; a crashing
# input is copied to tests/fuzz/crashes/<target>/, where the unit tests replay it from then on.
# Prints executions per second and coverage per target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET=${1:-600}
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(state_dict pickle_legacy safetensors idx image mat)
BUILD=${NORDF_FUZZ_BUILD_DIR:-build-fuzz}
# Fuzzing processes per target (NORDF_FUZZ_JOBS=1 lets two invocations share the cores).
JOBS=${NORDF_FUZZ_JOBS:-$(nproc)}
PARALLEL=()
((JOBS > 1)) && PARALLEL=(-jobs="$JOBS" -workers="$JOBS")

for p in clang-14 libfuzzer-14-dev; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y -qq --no-install-recommends clang-14 libfuzzer-14-dev >/dev/null
    break
  fi
done

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNORDF_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target $(printf 'fuzz_%s ' "${TARGETS[@]}")

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "${TARGETS[@]}"; do
  seeds=tests/fuzz/corpus/$t
  work=$BUILD/corpus/$t
  crashes=tests/fuzz/crashes/$t
  mkdir -p "$work" "$crashes" "$BUILD/artifacts/$t"
  cp -n "$seeds"/* "$work"/ 2>/dev/null || true
  echo "== $t: ${SECONDS_PER_TARGET} s"
  rc=0
  "$BUILD/tests/fuzz/fuzz_$t" "$work" "$seeds" -dict=tests/fuzz/pickle.dict -max_total_time="$SECONDS_PER_TARGET" \
    "${PARALLEL[@]}" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -max_len=65536 \
    -artifact_prefix="$BUILD/artifacts/$t/" -print_final_stats=1 >"$BUILD/fuzz-$t.log" 2>&1 || rc=$?
  cat fuzz-*.log >>"$BUILD/fuzz-$t.log" 2>/dev/null && rm -f fuzz-*.log
  grep -E "^#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::average_exec_per_sec|cov:" "$BUILD/fuzz-$t.log" | tail -4 || true
  for a in "$BUILD/artifacts/$t"/*; do
    [ -e "$a" ] || continue
    cp "$a" "$crashes/" && echo "finding: $a (saved to $crashes/)"
  done
  # Inputs of the working corpus that raise coverage beyond the seeds are added to the seeds, for
  # the next run and for the replay test.
  before=$(ls "$seeds" | wc -l)
  "$BUILD/tests/fuzz/fuzz_$t" -merge=1 "$seeds" "$work" -max_len=65536 >"$BUILD/merge-$t.log" 2>&1 || true
  echo "   seeds: $before -> $(ls "$seeds" | wc -l) inputs after merge; exit $rc"
done
