#!/usr/bin/env bash
# Decode (and short-prompt prefill) speed of GGUF files run directly by moetier, against
# llama.cpp's llama-bench on the very same files, runs interleaved on this machine.
#
#   bash scripts/bench_gguf_decode.sh RUNS N FILE.gguf [FILE.gguf ...]
#
# RUNS interleaved rounds (medians reported), N decode tokens after a 16-token prompt, 2 threads
# (or $THREADS). Set LLAMA_BENCH to a llama-bench binary for the llama.cpp column (built from
# llama.cpp's own sources; nothing of it is part of moetier); without it only moetier runs.
# moetier runs each file twice a round: as loaded by default (K-quant and Q8_0 matrices as row tiles on an
# AVX-512 CPU) and with --gguf-tiles off (every matrix in its GGUF blocks).
# Writes one JSON per run under ${OUT:-/tmp/bench_gguf_decode} and prints a table. MOETIER_ARGS adds
# flags to both moetier runs (e.g. "--isa avx2" for the path of CPUs without AVX-512).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:?RUNS}; N=${2:?N}; shift 2
[ $# -ge 1 ] || { echo "usage: $0 RUNS N FILE.gguf [FILE.gguf ...]" >&2; exit 2; }
THREADS=${THREADS:-$(nproc)}
OUT=${OUT:-/tmp/bench_gguf_decode}
MOETIER=${MOETIER:-./build/moetier}
mkdir -p "$OUT"
for r in $(seq 1 "$RUNS"); do
  for f in "$@"; do
    tag=$(basename "$f" .gguf)
    OMP_NUM_THREADS=$THREADS "$MOETIER" bench decode --model "$f" -n "$N" --prompt-tokens 16 ${MOETIER_ARGS:-} \
      --json "$OUT/moetier-$tag-$r.json" > "$OUT/moetier-$tag-$r.txt" 2>&1
    OMP_NUM_THREADS=$THREADS "$MOETIER" bench decode --model "$f" -n "$N" --prompt-tokens 16 --gguf-tiles off ${MOETIER_ARGS:-} \
      --json "$OUT/blocks-$tag-$r.json" > "$OUT/blocks-$tag-$r.txt" 2>&1
    if [ -n "${LLAMA_BENCH:-}" ]; then
      "$LLAMA_BENCH" -m "$f" -p 16 -n "$N" -t "$THREADS" -r 1 -o json > "$OUT/llama-$tag-$r.json" 2> "$OUT/llama-$tag-$r.err"
    fi
  done
done
python3 - "$OUT" "$RUNS" "$@" <<'EOF'
import json, os, statistics, sys
out, runs, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"{'file':28} {'GB':>6} {'ours tg t/s':>11} {'blocks tg':>9} {'ours pp t/s':>11} {'GB/s':>6} {'of RAM':>7} "
      f"{'llama tg':>9} {'llama pp':>9} {'tg ratio':>9} {'pp ratio':>9}")
for f in files:
    tag = os.path.basename(f)[:-5]
    ours = [json.load(open(f"{out}/moetier-{tag}-{r}.json")) for r in range(1, runs + 1)]
    med = lambda k: statistics.median(o[k] for o in ours)
    tg, pp = med("decode_tokens_per_s"), med("prefill_tokens_per_s")
    frac = statistics.median(o["bandwidth_fraction"] for o in ours)
    gbs = med("achieved_gbs")
    btg = statistics.median(json.load(open(f"{out}/blocks-{tag}-{r}.json"))["decode_tokens_per_s"] for r in range(1, runs + 1))
    ltg = lpp = None
    if os.path.exists(f"{out}/llama-{tag}-1.json"):
        l_tg, l_pp = [], []
        for r in range(1, runs + 1):
            for t in json.load(open(f"{out}/llama-{tag}-{r}.json")):
                (l_tg if t["n_gen"] > 0 else l_pp).append(t["avg_ts"])
        ltg, lpp = statistics.median(l_tg), statistics.median(l_pp)
    fmt = lambda v: f"{v:9.2f}" if v is not None else f"{'-':>9}"
    print(f"{tag:28} {os.path.getsize(f) / 1e9:6.2f} {tg:11.2f} {btg:9.2f} {pp:11.2f} {gbs:6.1f} {100 * frac:6.1f}% "
          f"{fmt(ltg)} {fmt(lpp)} {fmt(tg / ltg if ltg else None)} {fmt(pp / lpp if lpp else None)}")
EOF
