#!/usr/bin/env python3
"""`moetier demo`, the README's first command, through the CLI:
- it prints the three tables (this machine, the 671B V3.2 plan, the measured demo run);
- its verdict on the 671B model agrees with `moetier plan --preset deepseek-v3.2` on the same
  profile, and its "smallest RAM that runs" is confirmed by `plan --ram-budget` (that budget
  plans, 1% less does not); the all-in-RAM plan leaves no expert on NVMe;
- the demo run really streams (budget below the experts' bytes, experts on NVMe, disk reads)
  and really runs the model: its text equals `moetier generate` on the same store and prompt;
- `--json -` is JSON alone on stdout;
- bad flags and a damaged store: one `error:` line and a non-zero exit each.
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as C  # noqa: E402


def main():
    a = C.parse_args()
    ck = C.Checker()
    exe, work = a.moetier, a.workdir
    profile = os.path.join(work, "profile.json")
    C.run_cli(exe, ["profile", "--quick", "--force", "--out", profile, "--disk-dir", work])
    store = os.path.join(work, "demo-q4")
    shutil.rmtree(store, ignore_errors=True)
    prompt, n = "The quick brown fox jumps over", 24
    out_json = os.path.join(work, "demo.json")

    p = C.run_cli(exe, ["demo", "--store", store, "--profile", profile, "--prompt", prompt, "-n", n,
                        "--json", out_json])
    for title in ("This machine", "DeepSeek V3.2 (671B", "The demo model, run now", "predicted", "measured"):
        ck.check(f"the tables show '{title}'", title in p.stdout, "" if title in p.stdout else p.stdout[-400:])
    ck.check("the demo wrote its packed store", os.path.isfile(os.path.join(store, "manifest.json")))
    d = json.load(open(out_json))

    # The 671B verdict, against the plan command on the same profile.
    big = d["deepseek_v3_2"]
    plan = subprocess.run([exe, "plan", "--preset", "deepseek-v3.2", "--profile", profile, "--quiet"],
                          capture_output=True, text=True, timeout=300)
    ck.check("the 671B verdict agrees with moetier plan", big["fits"] == (plan.returncode == 0),
             f"demo fits={big['fits']}, plan exit {plan.returncode}: {plan.stderr.strip()[:200]}")
    if not big["fits"]:
        ck.check("a plan that does not fit says why", "does not fit" in big.get("why_not", ""), str(big.get("why_not")))
    experts_671b = (61 - 3) * 256
    if ck.check("the smallest RAM that runs is given", "minimum" in big, str(big.keys())):
        m = big["minimum"]
        budget = m["ram_budget_bytes"]
        ok = subprocess.run([exe, "plan", "--preset", "deepseek-v3.2", "--profile", profile, "--quiet",
                             "--ram-budget", str(budget)], capture_output=True, text=True, timeout=300)
        ck.check("plan --ram-budget at the advised minimum plans", ok.returncode == 0, ok.stderr.strip()[:300])
        low = subprocess.run([exe, "plan", "--preset", "deepseek-v3.2", "--profile", profile, "--quiet",
                              "--ram-budget", str(int(budget * 0.99))], capture_output=True, text=True, timeout=300)
        ck.check("1% below the advised minimum does not plan", low.returncode != 0, low.stderr.strip()[:200])
        ck.check("the minimum's experts add up", m["vram_experts"] + m["ram_experts"] + m["nvme_experts"] == experts_671b,
                 str(m))
        ck.check("machine RAM = budget + headroom", m["machine_ram_bytes"] > budget)
    if ck.check("the all-in-RAM budget is given", "all_in_ram" in big):
        r = big["all_in_ram"]
        ck.check("all in RAM leaves nothing on NVMe", r["nvme_experts"] == 0 and
                 r["vram_experts"] + r["ram_experts"] == experts_671b, str(r))
        if "minimum" in big:
            ck.check("all in RAM needs more RAM than the minimum", r["ram_budget_bytes"] > big["minimum"]["ram_budget_bytes"])
    ck.check("the q4 store size is that of the 671B model (350-420 GB)", 350e9 < big["store_bytes"] < 420e9,
             str(big["store_bytes"]))

    # The demo run.
    demo = d["demo"]
    ck.check("the expert budget is below the experts' bytes", 0 < demo["expert_ram_budget"] < demo["expert_bytes_total"],
             f"{demo['expert_ram_budget']} vs {demo['expert_bytes_total']}")
    ck.check("some experts live on NVMe", demo["plan"]["nvme_experts"] > 0, str(demo["plan"]))
    meas, pred = demo["measured"], demo["predicted"]
    ck.check("decode ran exactly n tokens", demo["decode_tokens"] == n, str(demo["decode_tokens"]))
    ck.check("experts were read from disk", meas["disk_bytes_per_token"] > 0, str(meas))
    ck.check("hit rates are rates", 0 <= meas["hit_rate"] <= 1 and 0 <= pred["hit_rate"] <= 1, f"{meas} {pred}")
    ck.check("speeds are positive", min(meas["decode_tokens_per_s"], meas["prefill_tokens_per_s"],
                                        pred["decode_tokens_per_s"], pred["prefill_tokens_per_s"]) > 0, f"{meas} {pred}")
    gen = C.run_cli(exe, ["generate", "--model", store, "--prompt", prompt, "-n", n, "--ignore-eos"])
    ck.check("the demo's text is what generate produces from the same store", gen.stdout.rstrip("\n") == prompt + demo["text"],
             f"generate: {gen.stdout[:120]!r} demo: {demo['text'][:120]!r}")

    # --json - : JSON alone on stdout.
    pj = subprocess.run([exe, "demo", "--store", store, "--profile", profile, "-n", "4", "--json", "-"],
                        capture_output=True, text=True, timeout=300)
    try:
        j = json.loads(pj.stdout)
        ck.check("--json - prints JSON only", pj.returncode == 0 and "demo" in j and "machine" in j)
    except ValueError as e:
        ck.check("--json - prints JSON only", False, f"{e}: {pj.stdout[:200]!r}")

    # Bad input.
    base = [exe, "demo", "--store", store, "--profile", profile]
    C.expect_error(ck, "--expert-share 0", base + ["--expert-share", "0"], "--expert-share")
    C.expect_error(ck, "--expert-share 1", base + ["--expert-share", "1"], "--expert-share")
    C.expect_error(ck, "--expert-share abc", base + ["--expert-share", "abc"], "expert-share")
    C.expect_error(ck, "-n 0", base + ["-n", "0"], "n-predict")
    C.expect_error(ck, "empty prompt", base + ["--prompt", ""], "--prompt")
    C.expect_error(ck, "a positional argument", base + ["extra"], "extra")
    C.expect_error(ck, "a missing profile", [exe, "demo", "--store", store, "--profile", os.path.join(work, "nope.json")],
                   "nope.json")
    other = os.path.join(work, "not-a-store")
    os.makedirs(other, exist_ok=True)
    with open(os.path.join(other, "keep.txt"), "w") as f:
        f.write("mine")
    C.expect_error(ck, "a --store that is some other directory", [exe, "demo", "--store", other, "--profile", profile],
                   "not a packed store")
    ck.check("... and that directory is left alone", open(os.path.join(other, "keep.txt")).read() == "mine")
    bad = os.path.join(work, "bad-store")
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(store, bad)
    with open(os.path.join(bad, "manifest.json"), "w") as f:
        f.write('{"format": "moetier-expert-store", "version": ')
    C.expect_error(ck, "a damaged store manifest", [exe, "demo", "--store", bad, "--profile", profile], "manifest.json")
    # A demo store an older moetier wrote (format 1) is written again, not refused.
    old = os.path.join(work, "old-store")
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(store, old)
    m = json.load(open(os.path.join(old, "manifest.json")))
    m["version"] = 1
    json.dump(m, open(os.path.join(old, "manifest.json"), "w"))
    p = subprocess.run([exe, "demo", "--store", old, "--profile", profile, "-n", "2", "--quiet"], capture_output=True,
                       text=True, timeout=600)
    ck.check("a format-1 demo store is written again and the demo runs",
             p.returncode == 0 and json.load(open(os.path.join(old, "manifest.json")))["version"] == 3,  # the current store format
             p.stderr.strip()[-300:])
    ck.finish()


if __name__ == "__main__":
    main()
