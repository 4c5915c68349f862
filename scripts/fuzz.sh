#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser (docs/testing.md): builds the fuzz targets with clang
# under libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer (float-cast-overflow included)
# in build-fuzz/, then runs each for SECONDS from its seed corpus (the target's own seeds, plus
# every input kept in tests/fuzz/corpus/<target>/: regressions and earlier finds), and prints one
# line per target: executions, coverage, features, corpus size. A crash, leak, timeout or UB
# report fails the run and leaves the input in build-fuzz/findings/<target>/; copy it into
# tests/fuzz/corpus/<target>/ once fixed, so that it stays a regression case.
# Usage: scripts/fuzz.sh SECONDS [TARGET...]      (TARGET: config, safetensors, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
command -v clang++ >/dev/null || { echo "scripts/fuzz.sh: clang++ is missing; run scripts/setup.sh" >&2; exit 2; }
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
JOBS=$(nproc 2>/dev/null || echo 2)
[ -f build-fuzz/CMakeCache.txt ] || cmake -S . -B build-fuzz "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DMOETIER_FUZZ=ON -DMOETIER_CUDA=OFF >/dev/null
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  for f in tests/fuzz/fuzz_*.cpp; do TARGETS+=("$(basename "$f" .cpp | sed 's/^fuzz_//')"); done
fi
BUILD=()
for t in "${TARGETS[@]}"; do BUILD+=("fuzz_${t}" "fuzz_${t}_libfuzzer"); done
cmake --build build-fuzz -j "$JOBS" --target "${BUILD[@]}" >/dev/null
status=0
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for t in "${TARGETS[@]}"; do
  work=build-fuzz/corpus/$t kept=tests/fuzz/corpus/$t finds=build-fuzz/findings/$t
  rm -rf "$work" && mkdir -p "$work" "$kept" "$finds"
  ./build-fuzz/tests/fuzz_$t --write-seeds "$work" >/dev/null
  log=build-fuzz/fuzz_$t.log
  if ./build-fuzz/tests/fuzz_${t}_libfuzzer -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=4096 \
       -max_len=300000 -print_final_stats=1 -artifact_prefix="$finds/" "$work" "$kept" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (see $log; inputs in $finds/)"
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
  corp=$(echo "$last" | sed -n 's/.*corp: \([0-9]*\).*/\1/p')
  printf '%-16s %10s execs  cov %6s  ft %6s  corpus %5s  %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
done
exit $status
