#!/usr/bin/env python3
"""The placement planner through the CLI:
- `plan --json` on a packed store writes a placement within its budget (checked here from the
  file and the store's own manifest), honours pins, and `--svg` draws one cell per expert;
- `logits --plan FILE` (RAM tier resident, NVMe tier streamed through a small cache) gives the
  same logits as all experts in RAM;
- the full 671B V3.2 plans for described machines;
- bad input (hardware strings, profiles, traces, pins, impossible budgets, a plan for another
  store): one `error:` line and a non-zero exit each.
"""
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as C  # noqa: E402

HW = "ram=8G@20GB/s,cores=2,disk=1GB/s,isa=avx2"


def expect_error(ck, name, argv, *needles):
    # Needles may sit in the explanation lines that follow the `error:` line.
    C.expect_error(ck, name, argv, *needles, whole_stderr=True)


def logits(exe, model, ids, out, *extra):
    return C.engine_logits(exe, model, ids, out, extra=extra)


def main():
    a = C.parse_args()
    ck = C.Checker()
    exe, work = a.moetier, a.workdir
    hf = os.path.join(work, "hf_v3")
    C.make_model(exe, hf, arch="v3", seed=31, dtype="fp8")
    store = os.path.join(work, "store_q8")
    shutil.rmtree(store, ignore_errors=True)
    C.run_cli(exe, ["convert", hf, store, "--experts", "q8"])
    manifest = json.load(open(os.path.join(store, "manifest.json")))
    blob = manifest["experts"]["blob_bytes"]
    cfg = manifest["config"]
    layers, experts = cfg["num_hidden_layers"], cfg["n_routed_experts"]
    first = cfg["first_k_dense_replace"]
    moe_layers = layers - first

    # A RAM share for experts of about a third of them (RAM tier + NVMe cache).
    expert_ram = blob * (moe_layers * experts // 3)
    plan_file = os.path.join(work, "plan.json")
    svg_file = os.path.join(work, "plan.svg")
    out = C.run_cli(exe, ["plan", "--model", store, "--hardware", HW, "--expert-ram", str(expert_ram),
                          "--pin", f"{first}:0=nvme,{first + 1}:3=ram", "--json", plan_file, "--svg", svg_file])
    text = out.stdout if hasattr(out, "stdout") else str(out)
    ck.check("plan prints a prediction and a bottleneck", "predicted decode" in text and "bottleneck" in text, text[-300:])
    p = json.load(open(plan_file))
    tiers = "".join(l["tiers"] for l in p["layers"])
    n_ram, n_nvme = tiers.count("R"), tiers.count("N")
    ck.check("placement covers every expert of every MoE layer",
             len(p["layers"]) == moe_layers and len(tiers) == moe_layers * experts and n_ram + n_nvme == len(tiers))
    ck.check("placement matches the store's format and blob size",
             p["expert_format"] == "q8" and p["expert_bytes"] == blob)
    used = n_ram * blob + p["nvme_cache_bytes"]
    ck.check("RAM tier + NVMe cache within the expert RAM budget", used <= expert_ram, f"{used} <= {expert_ram}")
    ck.check("some experts on NVMe behind a cache of >= 2 experts", n_nvme > 0 and p["nvme_cache_bytes"] >= 2 * blob)
    ck.check("pins honoured", p["layers"][0]["tiers"][0] == "N" and p["layers"][1]["tiers"][3] == "R",
             p["layers"][0]["tiers"] + " / " + p["layers"][1]["tiers"])
    ck.check("placement file carries the prediction", p["plan"]["decode_tokens_per_s"] > 0)
    root = ET.parse(svg_file).getroot()
    cells = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.find("{http://www.w3.org/2000/svg}title") is not None]
    ck.check("heatmap has one cell per expert", len(cells) == moe_layers * experts, f"{len(cells)} cells")

    # The plan changes where experts live, not what they compute.
    ids = C.random_ids(23, seed=5)
    ref = logits(exe, store, ids, os.path.join(work, "all_ram.npy"))
    got = logits(exe, store, ids, os.path.join(work, "planned.npy"), "--plan", plan_file)
    cos = C.cosine_rows(ref, got)
    ck.check("logits with the plan equal all-in-RAM (cosine > 1-1e-9, same argmax)",
             np.all(cos > 1 - 1e-9) and np.array_equal(ref.argmax(-1), got.argmax(-1)), f"min cos {cos.min():.12f}")
    r = subprocess.run([exe, "logits", "--model", store, "--ids", "1,2,3", "--out", os.path.join(work, "x.npy"),
                        "--plan", plan_file], capture_output=True, text=True, timeout=300)
    ck.check("the runtime prints the placement summary", "expert placement from" in r.stderr and "nvme" in r.stderr,
             r.stderr[-300:])

    # The full model on described machines.
    for hw in ("rtx4090-ddr5-8ch", "h100-epyc-256g", "cpu-only-768g",
               "gpu=24G,ram=512G@300GB/s,disk=7GB/s,cores=32,isa=avx512"):
        r = subprocess.run([exe, "plan", "--preset", "deepseek-v3.2", "--hardware", hw], capture_output=True,
                           text=True, timeout=120)
        ck.check(f"671B V3.2 plans on {hw}", r.returncode == 0 and "predicted decode" in r.stdout, r.stderr[-300:])

    # plan --check: the plan run on the store, predicted beside measured per part.
    prof = os.path.join(work, "quick_profile.json")
    C.run_cli(exe, ["profile", "--quick", "--out", prof, "--model", store])
    check_json = os.path.join(work, "check.json")
    r = subprocess.run([exe, "plan", "--model", store, "--profile", prof, "--expert-ram", str(expert_ram),
                        "--context", "64", "--fill", "16", "--check", "--check-tokens", "6", "--check-json", check_json],
                       capture_output=True, text=True, timeout=600)
    ck.check("plan --check runs the plan and prints the comparison",
             r.returncode == 0 and "predicted vs measured" in r.stdout and "whole step" in r.stdout, r.stderr[-400:])
    if r.returncode == 0:
        rep = json.load(open(check_json))
        parts = rep["parts"]
        ck.check("every part has a prediction and a measurement",
                 len(parts) == 8 and all(v["predicted_s"] >= 0 and v["measured_s"] >= 0 for v in parts.values()),
                 str(parts))
        whole = parts["whole step"]["measured_s"]
        measured_sum = sum(v["measured_s"] for k, v in parts.items() if k != "whole step")
        ck.check("the measured parts add up to the measured step (within 25%)",
                 whole > 0 and abs(measured_sum / whole - 1) < 0.25, str((measured_sum, whole)))
        ck.check("measured tokens/s is the inverse of the measured step (batch 1)",
                 abs(rep["measured_tokens_per_s"] * whole - 1) < 1e-6, str(rep["measured_tokens_per_s"]))
        ck.check("the predicted step is the plan's",
                 parts["whole step"]["predicted_s"] > 0 and
                 abs(rep["predicted_tokens_per_s"] * parts["whole step"]["predicted_s"] - 1) < 1e-6, str(rep))
        ck.check("disk bytes and the RAM hit share are compared",
                 rep["disk_bytes_per_token"]["measured"] >= 0 and 0 <= rep["ram_hit_share"]["measured"] <= 1, str(rep))

    # Bad input.
    base = [exe, "plan", "--model", store]
    expect_error(ck, "--check on a preset", [exe, "plan", "--preset", "tiny", "--check"], "--model")
    expect_error(ck, "--check of a described machine", base + ["--hardware", HW, "--check"], "--hardware")
    expect_error(ck, "--check-tokens without --check", base + ["--hardware", HW, "--check-tokens", "4"], "--check")
    expect_error(ck, "--check on a Hugging Face checkpoint", [exe, "plan", "--model", hf, "--check"], "manifest.json")
    expect_error(ck, "--check with no tokens", base + ["--profile", prof, "--check", "--check-tokens", "0"],
                 "check-tokens")
    expect_error(ck, "malformed hardware string", base + ["--hardware", "ram=abc,cores=4"], "ram")
    expect_error(ck, "hardware string with an unknown key", base + ["--hardware", "ram=8G,cores=4,turbo=1"], "turbo")
    expect_error(ck, "hardware string without ram", base + ["--hardware", "cores=4"], "ram")
    bad_profile = os.path.join(work, "bad_profile.json")
    with open(bad_profile, "w") as f:
        f.write('{"version": 1, "cpu_model": ')
    expect_error(ck, "truncated profile", base + ["--profile", bad_profile], "bad_profile.json")
    expect_error(ck, "unreadable profile", base + ["--profile", os.path.join(work, "absent.json")], "absent.json")
    bad_trace = os.path.join(work, "bad_trace.json")
    with open(bad_trace, "w") as f:
        json.dump({"format": "moetier-activations", "version": 1, "layers": "nope"}, f)
    expect_error(ck, "malformed trace", base + ["--hardware", HW, "--trace", bad_trace], "bad_trace.json")
    expect_error(ck, "pin on a dense layer", base + ["--hardware", HW, "--pin", "0:1=ram"], "not a MoE layer")
    expect_error(ck, "pin with an unknown tier", base + ["--hardware", HW, "--pin", f"{first}:1=ssd"], "TIER")
    expect_error(ck, "671B on a machine that cannot hold it",
                 [exe, "plan", "--preset", "deepseek-v3.2", "--hardware", "ram=128G@100GB/s,cores=16,disk=none"],
                 "does not fit")
    expect_error(ck, "671B with a GPU too small for attention",
                 [exe, "plan", "--preset", "deepseek-v3.2", "--hardware", "gpu=8G,ram=1024G@300GB/s,cores=32,disk=7GB/s"],
                 "does not fit", "--no-gpu")
    # A plan for another store.
    other = os.path.join(work, "other_plan.json")
    C.run_cli(exe, ["plan", "--preset", "demo", "--experts", "q8", "--hardware", HW, "--json", other, "--quiet"])
    expect_error(ck, "plan for another model", [exe, "logits", "--model", store, "--ids", "1,2", "--out",
                                                os.path.join(work, "y.npy"), "--plan", other], "re-run moetier plan")
    with open(os.path.join(work, "cut_plan.json"), "w") as f:
        f.write(open(plan_file).read()[:100])
    expect_error(ck, "truncated plan", [exe, "logits", "--model", store, "--ids", "1,2", "--out",
                                        os.path.join(work, "y.npy"), "--plan", os.path.join(work, "cut_plan.json")],
                 "cut_plan.json")
    expect_error(ck, "plan on a Hugging Face checkpoint", [exe, "logits", "--model", hf, "--ids", "1,2", "--out",
                                                           os.path.join(work, "y.npy"), "--plan", plan_file],
                 "packed store")
    ck.finish()


if __name__ == "__main__":
    main()
