#!/usr/bin/env bash
# Every GPU test and benchmark of the CUDA backend, in one call on a GPU machine (H100/H200),
# finishing within 8 minutes: builds with CUDA (the Debian libraries from .devdeps/ when the
# machine has no package registry: scripts/gpu_devdeps.sh makes it here, the device call carries
# it), runs the GPU tests, then the benchmarks, writes every log under LOG_DIR and prints a
# short table last. Exit status: 0 when every test passed.
#
#   bash scripts/gpu_check.sh LOG_DIR          (on the device: bash scripts/gpu_check.sh "$OUT")
set -uo pipefail
OUT=${1:?usage: scripts/gpu_check.sh LOG_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
ROWS=()
row() { ROWS+=("$(printf '%-48s %-6s %s' "$1" "$2" "$3")"); }
FAILED=0
table() {
  echo
  echo "== moetier GPU check ($(elapsed) s) on ${GPU_NAME:-unknown GPU} =="
  printf '%s\n' "${ROWS[@]}"
  echo "logs: $OUT"
}

if [ -f .devdeps/use-debs.sh ]; then
  # shellcheck disable=SC1091
  source .devdeps/use-debs.sh
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)

# ---- build: the command, the GPU tests, CUDA for sm_90 ----
if ! cmake -S . -B build-gpu "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/configure.log" 2>&1 ||
   ! grep -q "building gpu_kernels" "$OUT/configure.log" ||
   ! cmake --build build-gpu -j "$(nproc)" --target moetier test_backend_ops test_gpu_layout test_hybrid_scheduler \
       test_hybrid_gpu_logits > "$OUT/build.log" 2>&1; then
  row "build with CUDA" FAIL "configure.log / build.log"
  tail -30 "$OUT/configure.log" "$OUT/build.log" 2>/dev/null
  table
  exit 1
fi
row "build with CUDA (sm_90)" ok "$(elapsed) s"
B=build-gpu

# ---- tests ----
run_test() {  # name, timeout, command...
  local name=$1 limit=$2
  shift 2
  if timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then
    row "$name" ok "$(grep -Eo 'All tests passed \([0-9]+ assertions' "$OUT/$name.log" | head -1 | tr -d '(')"
  else
    row "$name" FAIL "$(grep -Eo 'test cases:.*' "$OUT/$name.log" | tail -1) (see $name.log)"
    FAILED=1
  fi
}
run_test "CUDA backend registered" 60 $B/tests/test_backend_ops "[.gpu]"
run_test "op harness: every op vs reference" 240 $B/tests/test_backend_ops "op harness: every registered backend*"
run_test "host packing into GPU layouts" 120 $B/tests/test_gpu_layout
run_test "hybrid scheduler (fake device)" 120 $B/tests/test_hybrid_scheduler
run_test "hybrid logits = CPU (tiny V3, V3.2)" 240 $B/tests/test_hybrid_gpu_logits "[.gpu]"

# The op harness again under compute-sanitizer's memcheck (out-of-bounds and misaligned device
# accesses, API errors), when the toolkit has it and there is time.
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$SAN" ] && [ "$(elapsed)" -lt 240 ]; then
  run_test "op harness under compute-sanitizer" 150 "$SAN" --tool memcheck --error-exitcode 99 \
    $B/tests/test_backend_ops "op harness: every registered backend*"
else
  row "op harness under compute-sanitizer" SKIP "no compute-sanitizer, or out of time"
fi

# ---- benchmarks ----
if timeout 120 $B/moetier bench gpu --runs 20 --json "$OUT/bench_gpu.json" > "$OUT/bench_gpu.log" 2>&1; then
  while IFS= read -r l; do row "${l:0:48}" "" "${l:48}"; done < <(grep -E '^(MLA|indexer)' "$OUT/bench_gpu.log")
  row "device copy" "" "$(grep -Eo 'device copy [0-9]+ GB/s' "$OUT/bench_gpu.log")"
else
  row "bench gpu" FAIL "see bench_gpu.log"
fi

# The wide model (real expert shape, 2 layers x 64 experts, q4): half the experts in VRAM by
# plan (described hardware: no probe; 6.8 GB of VRAM leaves 33 of 64 experts per layer after
# the dense weights), the rest in RAM, against all on the CPU, and with the attention blocks
# run op by op (--gpu-graphs off); interleaved, 3 runs each.
WORK=${TMPDIR:-/tmp}/moetier-gpu-check
W=$WORK/wide-q4
if [ "$(elapsed)" -lt 330 ]; then
  mkdir -p "$WORK"
  [ -f "$W/manifest.json" ] || timeout 150 $B/moetier make-model --preset wide --layers 2 --experts 64 --packed q4 \
      --out "$W" > "$OUT/make_wide.log" 2>&1
  if [ -f "$W/manifest.json" ] &&
     $B/moetier plan --model "$W" --hardware "gpu=80G,ram=64G@100GB/s,disk=3GB/s,cores=16,isa=avx2" \
       --vram-budget 6800M --json "$OUT/placement.json" > "$OUT/plan.log" 2>&1; then
    for r in 1 2 3; do
      [ "$(elapsed)" -lt 430 ] || break
      timeout 60 $B/moetier bench decode --model "$W" -n 16 --json "$OUT/decode_cpu_$r.json" > "$OUT/decode_cpu_$r.log" 2>&1
      timeout 60 $B/moetier bench decode --model "$W" -n 16 --plan "$OUT/placement.json" --gpu on \
        --json "$OUT/decode_gpu_$r.json" > "$OUT/decode_gpu_$r.log" 2>&1
      timeout 60 $B/moetier bench decode --model "$W" -n 16 --plan "$OUT/placement.json" --gpu on --gpu-graphs off \
        --json "$OUT/decode_eager_$r.json" > "$OUT/decode_eager_$r.log" 2>&1
    done
    summary=$(python3 - "$OUT" <<'PY' 2>&1
import glob, json, statistics, sys
d = sys.argv[1]
def med(kind, key, sub=None):
    v = []
    for f in sorted(glob.glob(f"{d}/decode_{kind}_*.json")):
        j = json.load(open(f))
        x = j.get(sub, {}).get(key) if sub else j.get(key)
        if x is not None: v.append(x)
    return statistics.median(v) if v else float("nan")
c, g = med("cpu", "decode_tokens_per_s"), med("gpu", "decode_tokens_per_s")
e = med("eager", "decode_tokens_per_s")
h = med("gpu", "cpu_hidden_fraction", "hybrid")
gr, fl = med("gpu", "graphs", "attention_regions"), med("gpu", "failed", "attention_regions")
print(f"all CPU {c:.2f} tok/s, VRAM/RAM split {g:.2f} tok/s ({g / c:.2f}x); CPU expert time hidden {100 * h:.0f}%; "
      f"graphs off {e:.2f} tok/s (graphs on {g / e:.2f}x; {gr:.0f} blocks as graphs, {fl:.0f} failed)")
PY
)
    row "wide decode: split vs all-CPU" "" "$summary"
  else
    row "wide decode" FAIL "make_wide.log / plan.log"
  fi
else
  row "wide decode" SKIP "out of time ($(elapsed) s)"
fi
table
exit $FAILED
