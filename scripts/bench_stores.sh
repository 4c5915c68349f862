#!/usr/bin/env bash
# Whole-token speed of several packed stores on this machine: RUNS interleaved rounds of
# `bench decode` (a PROMPT-token prompt whose prefill is timed, then N decoded tokens) over every
# STORE, medians per store of decode and prefill tokens/s, weight bytes per token, achieved GB/s
# and its fraction of the RAM bandwidth each run measured, and the per-part time split
# (docs/benchmarks.md). Extra `bench decode` flags go in BENCH_FLAGS (e.g. "--batch 4").
# Usage: scripts/bench_stores.sh RUNS N PROMPT STORE...
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:?usage: scripts/bench_stores.sh RUNS N PROMPT STORE...}
N=${2:?}
P=${3:?}
shift 3
[ $# -gt 0 ] || { echo "usage: scripts/bench_stores.sh RUNS N PROMPT STORE..." >&2; exit 2; }
[ -x build/moetier ] || bash scripts/build.sh
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
lscpu | sed -n 's/^Model name: *//p' | head -1 > "$OUT/cpu.txt"
for i in $(seq 1 "$RUNS"); do
  j=0
  for s in "$@"; do
    j=$((j + 1))
    # shellcheck disable=SC2086
    ./build/moetier bench decode --model "$s" -n "$N" --prompt-tokens "$P" ${BENCH_FLAGS:-} \
      --json "$OUT/s$j-$i.json" >/dev/null 2>"$OUT/err.txt" || { cat "$OUT/err.txt" >&2; exit 1; }
  done
done
/usr/bin/python3 - "$OUT" "$RUNS" "$@" <<'PY'
import json, statistics, sys
out, runs, stores = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
cpu = open(f"{out}/cpu.txt").read().strip()
med = lambda xs: statistics.median(xs)
print(f"CPU: {cpu}; {runs} interleaved rounds, medians")
print("| store | decode tok/s | prefill tok/s | GB/token | achieved GB/s | RAM GB/s (same run) | fraction |")
print("|---|---:|---:|---:|---:|---:|---:|")
parts = {}
for j, s in enumerate(stores, 1):
    r = [json.load(open(f"{out}/s{j}-{i}.json")) for i in range(1, runs + 1)]
    g = lambda k: med([x[k] for x in r])
    print(f"| {s} | {g('decode_tokens_per_s'):.2f} | {g('prefill_tokens_per_s'):.1f} | {g('gb_per_token'):.3f} | "
          f"{g('achieved_gbs'):.1f} | {g('membw_gbs'):.1f} | {100 * med([x['bandwidth_fraction'] for x in r]):.0f}% |")
    parts[s] = {p: med([x["parts"][p]["ms_per_token"] for x in r]) for p in r[0]["parts"]}
names = list(next(iter(parts.values())).keys())
print("\nms per decoded token by part (medians):\n")
print("| part | " + " | ".join(stores) + " |")
print("|---|" + "---:|" * len(stores))
for p in names:
    print(f"| {p} | " + " | ".join(f"{parts[s].get(p, 0):.2f}" for s in stores) + " |")
PY
