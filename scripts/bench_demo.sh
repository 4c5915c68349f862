#!/usr/bin/env bash
# `moetier demo`'s run of the demo model, predicted vs measured: RUNS runs (default 5) of the
# demo with the cached profile, medians of each figure (docs/benchmarks.md).
# Usage: scripts/bench_demo.sh [RUNS] [N]      (N: decode tokens per run, default 64)
# Runs as a user would (OpenMP defaults): with OMP_WAIT_POLICY=passive the tiny demo model
# decodes ~13% slower here, its per-token work being shorter than a thread wake-up.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
N=${2:-64}
[ -x build/moetier ] || bash scripts/build.sh
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for i in $(seq 1 "$RUNS"); do ./build/moetier demo -n "$N" --quiet --json "$OUT/run-$i.json" >/dev/null; done
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
d = [json.load(open(f"{out}/run-{i}.json")) for i in range(1, runs + 1)]
m = d[0]["machine"]
print(f"machine: {m['cpu']}, {m['cores']} cores, {m['isa']}; {runs} runs, medians")
print(f"{'':28} {'predicted':>10} {'measured':>10} {'meas/pred':>10}")
for key, label, scale in (("prefill_tokens_per_s", "prefill tokens/s", 1), ("decode_tokens_per_s", "decode tokens/s", 1),
                          ("hit_rate", "expert cache hit rate %", 100), ("disk_bytes_per_token", "disk KB per token", 1e-3)):
    p = statistics.median(x["demo"]["predicted"][key] for x in d) * scale
    q = statistics.median(x["demo"]["measured"][key] for x in d) * scale
    print(f"{label:28} {p:10.1f} {q:10.1f} {q / p if p else float('nan'):10.2f}")
print("runs, decode tokens/s: " + " ".join(f"{x['demo']['measured']['decode_tokens_per_s']:.1f}" for x in d))
PY
