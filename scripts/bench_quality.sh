#!/usr/bin/env bash
# Quality of packed-store formats: the logits of every position of one POSITIONS-token sequence
# (random token ids, fixed seed) from each STORE against those of REF (the unquantised store:
# convert --experts bf16 --dense bf16), by `moetier logits` on the fast CPU backend (equal to the
# reference backend within fp32 rounding on unquantised weights: e2e_test_backends). Prints, per
# store, top-1 agreement and the mean KL divergence KL(ref || store) over the positions
# (docs/benchmarks.md). Extra `logits` flags go in LOGITS_FLAGS (e.g. "--ram-budget 8G").
# Usage: scripts/bench_quality.sh POSITIONS REF STORE...
set -euo pipefail
cd "$(dirname "$0")/.."
NPOS=${1:?usage: scripts/bench_quality.sh POSITIONS REF STORE...}
REF=${2:?}
shift 2
[ -x build/moetier ] || bash scripts/build.sh
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
IDS=$(/usr/bin/python3 -c "import random; r = random.Random(1234); print(','.join(str(r.randrange(1, 128000)) for _ in range($NPOS)))")
# shellcheck disable=SC2086
./build/moetier logits --model "$REF" --ids "$IDS" --out "$OUT/ref.npy" ${LOGITS_FLAGS:-} >/dev/null 2>"$OUT/err.txt" ||
  { cat "$OUT/err.txt" >&2; exit 1; }
j=0
for s in "$@"; do
  j=$((j + 1))
  # shellcheck disable=SC2086
  ./build/moetier logits --model "$s" --ids "$IDS" --out "$OUT/s$j.npy" ${LOGITS_FLAGS:-} >/dev/null 2>"$OUT/err.txt" ||
    { cat "$OUT/err.txt" >&2; exit 1; }
done
/usr/bin/python3 - "$OUT" "$REF" "$@" <<'PY'
import sys
import numpy as np
out, ref_name, stores = sys.argv[1], sys.argv[2], sys.argv[3:]
def logsoftmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
ref = np.load(f"{out}/ref.npy")
lr = logsoftmax(ref)
pr = np.exp(lr)
print(f"reference: {ref_name}, {ref.shape[0]} positions")
print("| store | top-1 agreement | mean KL(ref ‖ store) | max KL | mean cosine |")
print("|---|---:|---:|---:|---:|")
for j, s in enumerate(stores, 1):
    x = np.load(f"{out}/s{j}.npy")
    lx = logsoftmax(x)
    kl = (pr * (lr - lx)).sum(-1)
    cos = (ref * x).sum(-1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(x, axis=-1)
    top1 = (ref.argmax(-1) == x.argmax(-1)).mean()
    print(f"| {s} | {100 * top1:.1f}% | {kl.mean():.5f} | {kl.max():.5f} | {cos.mean():.6f} |")
PY
