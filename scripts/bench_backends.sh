#!/usr/bin/env bash
# Whole-token decode, the fast CPU backend against the reference backend, on a packed store:
# RUNS interleaved rounds of `bench decode` (a PROMPT-token prompt, then N tokens) with each backend,
# medians, their ratio, and this machine's RAM read bandwidth from `bench membw` in the same run.
# Usage: scripts/bench_backends.sh STORE [RUNS] [N] [PROMPT]  (default 5 rounds, 16 decoded tokens
# after a 128-token prompt whose prefill is timed too; docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:?usage: scripts/bench_backends.sh STORE [RUNS] [N]}
RUNS=${2:-5}
N=${3:-16}
P=${4:-128}
[ -x build/moetier ] || bash scripts/build.sh
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
./build/moetier bench membw --json "$OUT/membw.json" >/dev/null
for i in $(seq 1 "$RUNS"); do
  for b in reference cpu; do
    ./build/moetier bench decode --model "$STORE" --backend "$b" -n "$N" --prompt-tokens "$P" --json "$OUT/$b-$i.json" >/dev/null 2>&1
  done
done
python3 - "$OUT" "$RUNS" "$STORE" <<'PY'
import json, os, statistics, struct, sys
out, runs, store = sys.argv[1], int(sys.argv[2]), sys.argv[3]
bw = json.load(open(f"{out}/membw.json"))["membw_gbs"]
# Bytes one decoded token reads: every dense tensor but the embedding (one row of it), plus
# top_k experts in each MoE layer (all resident: no disk).
man = json.load(open(os.path.join(store, "manifest.json")))
cfg = man["config"]
dense = sum(t["bytes"] for t in man["dense"]["tensors"] if t["name"] != "model.embed_tokens.weight")
moe_layers = cfg["num_hidden_layers"] - cfg["first_k_dense_replace"]
experts = moe_layers * cfg["num_experts_per_tok"] * man["experts"]["blob_bytes"]
per_token = dense + experts
print(f"bytes per token: {per_token / 1e9:.2f} GB ({dense / 1e9:.2f} dense, {experts / 1e9:.2f} routed experts)")
med = {}
for b in ("reference", "cpu"):
    v = [json.load(open(f"{out}/{b}-{i}.json"))["decode_tokens_per_s"] for i in range(1, runs + 1)]
    med[b] = statistics.median(v)
    gbs = med[b] * per_token / 1e9
    pf = statistics.median(json.load(open(f"{out}/{b}-{i}.json"))["prefill_tokens_per_s"] for i in range(1, runs + 1))
    med[b + " prefill"] = pf
    print(f"{b:>10}: decode {med[b]:6.2f} tokens/s, {gbs:5.1f} GB/s = {gbs / bw:.2f} of RAM bandwidth; "
          f"prefill {pf:6.1f} tokens/s (medians of {runs}; decode runs " + " ".join(f"{x:.2f}" for x in v) + ")")
print(f"cpu / reference: decode {med['cpu'] / med['reference']:.2f}x, prefill {med['cpu prefill'] / med['reference prefill']:.2f}x; RAM read bandwidth (bench membw, same run): {bw:.1f} GB/s")
PY
