#!/usr/bin/env bash
# The GGUF kernels against the ≥ 85%-of-RAM-bandwidth bar, beside the store's own formats in the
# same rounds (docs/benchmarks.md). Each round, for each thread count: `bench moe` (the store's q4
# and q8 experts, a MoE layer's decode) at every ISA this CPU has, then `bench gguf --tiles-only`
# over every GGUF type moetier runs (the kernels generate runs, each beside the level's own where
# they differ). Every figure is a ratio to RAM bandwidth sampled just before it. Where a thread
# count's bandwidth samples fall in two clusters (a VM's RAM bandwidth can be bimodal), the table
# splits the runs at the widest gap between them (one over 15%): `fast` runs put more load on
# each core than `low` ones.
# Usage: scripts/bench_gguf_bar.sh [ROUNDS] [THREADS...]   (default 6 rounds, 1 thread and all cores;
#        about 3.5 min a round on 2 cores). The JSON of every run stays in $OUT (default
#        /tmp/bench_gguf_bar, emptied first); ROUNDS 0 only prints the table of the runs there. Runs with OpenMP's defaults, as a user's generate does:
#        OMP_WAIT_POLICY=passive puts the team to sleep between a bench's GEMV calls and cost
#        two-thread rounds 5-20 points here.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-6}
shift || true
THREADS=("$@")
[ ${#THREADS[@]} -gt 0 ] || THREADS=(1 "$(nproc)")
BIN=${MOETIER:-./build/moetier}
[ -x "$BIN" ] || bash scripts/build.sh
unset OMP_WAIT_POLICY
ISAS=(avx2)
grep -qw avx512f /proc/cpuinfo && ISAS+=(avx512)
TYPES=Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0,F32,F16,BF16
OUT=${OUT:-/tmp/bench_gguf_bar}
mkdir -p "$OUT"
[ "$ROUNDS" = 0 ] || rm -f "$OUT"/*.json
[ "$ROUNDS" = 0 ] || echo "bench_gguf_bar: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $ROUNDS rounds, threads ${THREADS[*]}" >&2
for r in $(seq 1 "$ROUNDS"); do
  for t in "${THREADS[@]}"; do
    for isa in "${ISAS[@]}"; do
      for q in q4 q8; do
        "$BIN" bench moe --threads "$t" --runs 3 --quant "$q" --isa "$isa" --json "$OUT/moe-$r-$t-$isa-$q.json" \
          >/dev/null 2>"$OUT/err.txt" || { cat "$OUT/err.txt" >&2; exit 1; }
      done
    done
    "$BIN" bench gguf --threads "$t" --runs 3 --tiles-only --type "$TYPES" --json "$OUT/gguf-$r-$t.json" \
      >/dev/null 2>"$OUT/err.txt" || { cat "$OUT/err.txt" >&2; exit 1; }
  done
  echo "bench_gguf_bar: round $r of $ROUNDS done" >&2
done
python3 - "$OUT" <<'EOF'
import glob, json, os, re, statistics, sys
from collections import defaultdict

runs = defaultdict(list)  # (threads, row name) -> [(ratio, RAM GB/s)]
for f in glob.glob(os.path.join(sys.argv[1], "*.json")):
    j = json.load(open(f))
    t = int(re.search(r"-(\d+)(?:-[a-z0-9]+-q\d)?\.json$", os.path.basename(f)).group(1))
    if j["bench"] == "moe":
        isa = "avx512" if j["isa"].startswith("avx512") else j["isa"]
        for r in j["ratios"]:
            runs[(t, f"store {j['quant']:<5} {isa:<7} moe")].append((r, j["membw_gbs"]))
    else:
        for res in j["results"]:
            name = f"{res['type']:<10} {res['isa']:<7} {res['path']}"
            for r, bw in zip(res["ratios"], res["membw_runs_gbs"]):
                runs[(t, name)].append((r, bw))

def cell(v):
    if not v:
        return "-"
    r = [x[0] for x in v]
    return f"{100 * statistics.median(r):5.1f}% ({100 * min(r):.0f}-{100 * max(r):.0f}, n={len(r)})"

for t in sorted({k[0] for k in runs}):
    bws = sorted(bw for k, v in runs.items() if k[0] == t for _, bw in v)
    # The widest gap with a tenth of the samples or more on each side (not a lone outlier).
    m = max(1, len(bws) // 10)
    gaps = [(bws[i + 1] / bws[i], i) for i in range(m - 1, len(bws) - m)]
    gap, i = max(gaps) if gaps else (1.0, 0)
    cut = (bws[i] + bws[i + 1]) / 2 if gap > 1.15 else bws[-1]
    fast_bw = [bw for k, v in runs.items() if k[0] == t for _, bw in v if bw > cut]
    low_bw = [bw for k, v in runs.items() if k[0] == t for _, bw in v if bw <= cut]
    print(f"\n{t} thread(s): low {min(low_bw):.1f}-{max(low_bw):.1f} GB/s" +
          (f", fast {min(fast_bw):.1f}-{max(fast_bw):.1f} GB/s" if fast_bw else ", no fast-regime run"))
    print(f"{'':<40}{'low regime':<26}{'fast regime':<26}")
    for k in sorted(k for k in runs if k[0] == t):
        v = runs[k]
        print(f"{k[1]:<40}{cell([x for x in v if x[1] <= cut]):<26}{cell([x for x in v if x[1] > cut]):<26}")
EOF
