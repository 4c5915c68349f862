#!/usr/bin/env bash
# Planner predictions against measurement on this machine (docs/planner.md):
#   a wide q4 store (2 layers x 64 experts of the real shape, 3.05 GB of experts), a trace of six
#   prompts, three placements (all experts in RAM; RAM for about half; about a fifth with the rest
#   on disk), each planned, then measured with `bench decode --plan` in interleaved runs.
# Usage: scripts/bench_planner.sh [WORKDIR] [RUNS] [quiet|loaded]   (default /work/bench, 5 runs,
#        quiet; ~6 GB of disk). `loaded`: the profile is taken (--force) while another process
#        streams memory; it must come out provisional and be measured again by the first plan,
#        so that the predictions are those of a quiet profile.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/work/bench}
RUNS=${2:-5}
MODE=${3:-quiet}
BIN=./build/moetier
export OMP_WAIT_POLICY=passive
STORE=$WORK/wide-l2-e64-q4
OUT=$WORK/plan
mkdir -p "$OUT"
[ -x "$BIN" ] || bash scripts/build.sh
[ -f "$STORE/manifest.json" ] ||
  $BIN make-model --preset wide --layers 2 --experts 64 --packed q4 --seed 1 --out "$STORE"
cat > "$OUT/prompts.txt" <<'EOF'
The history of the printing press begins in
Explain how a mixture-of-experts language model routes each token.
def fibonacci(n):
Write a short poem about the sea at night.
What is the capital of Australia, and why was it chosen?
In 1905, Albert Einstein published four papers that
EOF
[ -f "$OUT/trace.json" ] || $BIN trace --model "$STORE" --prompts "$OUT/prompts.txt" -n 16 --out "$OUT/trace.json"
# The profile lives in a cache of this campaign's own (XDG_CACHE_HOME), so that plans find it
# the way a user's do: a provisional one is measured again at its next use.
export XDG_CACHE_HOME=$OUT/cache
PROFILE=$XDG_CACHE_HOME/moetier/profile.json
if [ "$MODE" = loaded ]; then
  # Another process streams memory (copies 256 MiB over and over) while the profile measures.
  python3 -c "import time
b = bytearray(256 << 20)
end = time.time() + 600
while time.time() < end: c = bytes(b)" &
  STREAMER=$!
  sleep 1
  $BIN profile --model "$STORE" --force 2>&1 | grep -E "busy|PROVISIONAL" || true
  kill $STREAMER; wait $STREAMER 2>/dev/null || true
  python3 -c "import json,sys; p=json.load(open(sys.argv[1])); print('loaded profile: provisional', p['provisional'], 'others share %.2f' % p['others_cpu_share'], 'RAM %.1f GB/s' % p['ram']['read_gbs'], 'q4 decode %.1f GB/s' % [k for k in p['kernels'] if k['format']=='q4'][0]['decode_gbs'])" "$PROFILE"
  sleep 5
else
  $BIN profile --model "$STORE" >/dev/null
fi
BUDGETS="4G 1600M 640M"
for r in $BUDGETS; do
  # bench decode: a 16-token prompt then 32 tokens, so decode runs at ~32 tokens of context.
  # (A provisional profile is measured again here, by the first plan, on the now quiet machine.)
  $BIN plan --model "$STORE" --trace "$OUT/trace.json" --expert-ram "$r" --context 96 --fill 32 \
    --json "$OUT/plan-$r.json" --svg "$OUT/plan-$r.svg" --quiet
done
python3 -c "import json,sys; p=json.load(open(sys.argv[1])); print('profile the plans used: provisional', p['provisional'], 'measured', p['measured_at'], 'others share %.2f' % p['others_cpu_share'], 'RAM %.1f GB/s' % p['ram']['read_gbs'], 'disk %.2f GB/s' % p['disk']['read_gbs'])" "$PROFILE"
for run in $(seq 1 "$RUNS"); do
  for r in $BUDGETS; do
    $BIN bench decode --model "$STORE" --plan "$OUT/plan-$r.json" -n 32 --json "$OUT/measured-$r-$run.json" >/dev/null 2>&1
  done
done
python3 - "$OUT" "$RUNS" $BUDGETS <<'EOF'
import json, statistics, sys
out, runs, budgets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"{'expert RAM':>10} {'RAM tier':>8} {'NVMe':>5} {'predicted':>9} {'measured':>9} {'pred/meas':>9} "
      f"{'hit pred':>8} {'hit meas':>8} {'disk MB/tok pred':>16} {'meas':>6} {'disk p/m':>8}  within 15%")
for b in budgets:
    p = json.load(open(f"{out}/plan-{b}.json"))
    tiers = "".join(l["tiers"] for l in p["layers"])
    m = [json.load(open(f"{out}/measured-{b}-{i}.json")) for i in range(1, runs + 1)]
    med = statistics.median(x["decode_tokens_per_s"] for x in m)
    pr = p["plan"]
    hit = pr["share_of_reads"]["ram"] + pr["share_of_reads"]["nvme_hit"] + pr["share_of_reads"]["vram"]
    print(f"{b:>10} {tiers.count('R'):>8} {tiers.count('N'):>5} {pr['decode_tokens_per_s']:>9.2f} {med:>9.2f} "
          f"{pr['decode_tokens_per_s'] / med:>9.2f} {100 * hit:>7.1f}% {100 * statistics.median(x['hit_rate'] for x in m):>7.1f}% "
          f"{pr['disk_bytes_per_token'] / 1e6:>16.0f} {1000 * statistics.median(x['disk_gb_per_token'] for x in m):>6.0f} "
          + (lambda d: f"{pr['disk_bytes_per_token'] / 1e9 / d:>8.2f}" if d > 0 else f"{'-':>8}")(statistics.median(x['disk_gb_per_token'] for x in m))
          + ("  yes" if abs(pr['decode_tokens_per_s'] / med - 1) <= 0.15 else "  NO"))
    print(f"{'':>10} runs: " + " ".join(f"{x['decode_tokens_per_s']:.2f}" for x in m))
EOF
