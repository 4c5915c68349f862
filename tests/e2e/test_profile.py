#!/usr/bin/env python3
"""moetier profile through the CLI: a --quick measurement writes a valid profile under
XDG_CACHE_HOME (and --out), a second run reuses it, --show prints it without measuring, and a
corrupt or missing profile gives one 'error:' line and a non-zero exit, never a crash. The
scratch file of the disk measurement is removed."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as C  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moetier", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    exe, work = args.moetier, args.workdir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env = dict(os.environ, XDG_CACHE_HOME=work, OMP_WAIT_POLICY="passive")
    passed = failed = 0

    def check(label, ok, detail=""):
        nonlocal passed, failed
        if ok:
            print(f"ok   {label}")
            passed += 1
        else:
            print(f"FAIL {label}: {detail}")
            failed += 1

    def run(argv, timeout=120):
        t0 = time.time()
        p = subprocess.run([exe] + argv, capture_output=True, text=True, timeout=timeout, env=env)
        return p, time.time() - t0

    out = os.path.join(work, "p.json")
    p, secs = run(["profile", "--quick", "--out", out, "--json"])
    check("profile --quick exits 0", p.returncode == 0, p.stderr[-600:])
    check(f"profile --quick is quick ({secs:.1f} s)", secs < 60, f"{secs:.1f} s")
    prof = {}
    try:
        prof = json.load(open(out))
        check("stdout JSON equals the saved file", json.loads(p.stdout) == prof)
    except Exception as e:  # noqa: BLE001
        check("profile file is JSON", False, repr(e))
    if prof:
        check("version and source", prof["version"] == 2 and prof["source"] == "measured (quick)", prof.get("source"))
        check("cpu", prof["cpu"]["logical_cpus"] >= prof["cpu"]["physical_cores"] >= 1, prof["cpu"])
        check("ram", prof["ram"]["total_bytes"] >= prof["ram"]["available_bytes"] > 0 and prof["ram"]["read_gbs"] > 0,
              prof["ram"])
        formats = sorted(k["format"] for k in prof["kernels"])
        # The GGUF row-tile kernels by block type, on every CPU with AVX2 (their lowest level).
        avx2 = " avx2 " in " " + open("/proc/cpuinfo").read().replace("\n", " ") + " "
        gguf_types = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0"] if avx2 else []
        check("kernels q4, q8, bf16 and the GGUF tile types" + ("" if avx2 else " (none here: no AVX2)"),
              formats == sorted(["bf16", "q4", "q8"] + gguf_types), formats)
        check("kernel rates positive",
              all(k["decode_gbs"] > 0 and k["prefill_gflops"] > 0 for k in prof["kernels"]), prof["kernels"])
        rates = {(r["block_bytes"], r["queue_depth"]) for r in prof["disk"]["rates"]}
        check("disk rates at 2 block sizes x QD 1, 4, 16, 32", len(rates) == 8 and prof["disk"]["read_gbs"] > 0,
              prof["disk"])
        best = max(r["gbs"] for r in prof["disk"]["rates"] if r["block_bytes"] == 1 << 20)
        check("the planner's disk rate is the 1 MiB reads' best depth, measured again (median within the spread)",
              0 < prof["disk"]["read_gbs"] and
              abs(prof["disk"]["read_gbs"] - best) <= prof["spread"]["disk.read_gbs"] * prof["disk"]["read_gbs"] + 1e-9
              and prof["disk"]["device"].count(":") == 1, (best, prof["disk"]["read_gbs"], prof["spread"]))
        check("dense and attention rates positive",
              all(prof["dense"][k] > 0 for k in ("bf16_gbs", "fp8_gbs", "q8_gbs", "q4_gbs", "attention_gflops")),
              prof["dense"])
        want = {"ram.read_gbs", "disk.read_gbs", "kernels.q4.decode_gbs", "kernels.q8.decode_gbs",
                "kernels.bf16.decode_gbs", "dense.bf16_gbs", "dense.fp8_gbs", "dense.q8_gbs", "dense.q4_gbs",
                "dense.attention_gflops"} | {f"kernels.{t}.decode_gbs" for t in gguf_types}
        check("every figure the planner uses was measured more than once, with its spread kept",
              want <= set(prof["spread"]) and all(v >= 0 for v in prof["spread"].values()), prof.get("spread"))
        check("fingerprint", prof["fingerprint"].startswith("v2-"), prof["fingerprint"])
    leftovers = [f for f in os.listdir(work) if ".tmp" in f]
    check("no scratch or temp file left", not leftovers, leftovers)

    p, secs = run(["profile", "--quick", "--out", out])
    if prof.get("provisional"):  # measured while the machine was busy (CI runs tests side by side)
        check("second run measures a provisional profile again",
              p.returncode == 0 and "measuring again" in p.stderr and "machine profile:" in p.stdout, p.stderr[-400:])
    else:
        check("second run reuses the cached profile",
              p.returncode == 0 and "using cached profile" in p.stderr and "machine profile:" in p.stdout,
              p.stderr[-400:])

    # A profile measured under load is provisional: measured again at its next use, and plans
    # from it say so.
    check("the profile records its load and whether it is provisional",
          "load_per_cpu" in prof and prof["load_per_cpu"] >= 0 and 0 <= prof["others_cpu_share"] <= 1 and
          prof.get("provisional") == (prof["others_cpu_share"] > 0.10),
          {k: prof.get(k) for k in ("load_per_cpu", "others_cpu_share", "provisional")})
    prov = dict(json.load(open(out)), provisional=True, load_per_cpu=1.7, measured_at="2026-01-01T00:00:00Z")
    json.dump(prov, open(out, "w"))
    p, _ = run(["plan", "--preset", "deepseek-v3.2", "--profile", out])
    check("a plan from a provisional profile says so, with its age and load",
          p.returncode == 0 and "PROVISIONAL" in p.stdout and "load 1.70 per CPU" in p.stdout and "days ago" in p.stdout,
          p.stdout[:600])
    p, _ = run(["profile", "--quick", "--out", out])
    again = json.load(open(out))
    check("a provisional cached profile is measured again at its next use",
          p.returncode == 0 and "provisional" in p.stderr and "measuring again" in p.stderr and
          again["measured_at"] != "2026-01-01T00:00:00Z",
          p.stderr[-400:])

    # A profile taken while another process streams memory notices it (the other process's
    # share of the CPUs) and is saved as provisional, so that it does not poison later plans.
    loaded = os.path.join(work, "loaded.json")
    streamer = subprocess.Popen([sys.executable, "-c",
                                 "import time\nb = bytearray(128 << 20)\nend = time.time() + 120\n"
                                 "while time.time() < end: c = bytes(b)\n"])
    try:
        time.sleep(0.5)
        p, _ = run(["profile", "--quick", "--force", "--out", loaded])
    finally:
        streamer.kill()
        streamer.wait()
    lp = json.load(open(loaded)) if os.path.exists(loaded) else {}
    check("a profile measured beside a memory-streaming process is provisional",
          p.returncode == 0 and lp.get("provisional") is True and lp.get("others_cpu_share", 0) > 0.10 and
          "PROVISIONAL" in p.stderr, {k: lp.get(k) for k in ("others_cpu_share", "provisional")})

    # Disk figures are keyed by device: another directory on the same device reuses them;
    # another device is measured and both are kept.
    disk_prof = os.path.join(work, "disk.json")
    run(["profile", "--quick", "--force", "--out", disk_prof, "--disk-dir", os.path.join(work, "d1")])
    first = json.load(open(disk_prof))
    p, _ = run(["profile", "--quick", "--out", disk_prof, "--disk-dir", os.path.join(work, "d2")])
    dp = json.load(open(disk_prof))
    base = dp["disk"]["path"]  # d1, or d2 when the first profile was provisional and measured again
    if first.get("provisional"):
        check("(disk keys) a provisional profile is measured again", "measuring again" in p.stderr, p.stderr[-300:])
    else:
        check("another directory on the same device reuses the disk figures",
              p.returncode == 0 and "using cached profile" in p.stderr and "measuring the disk" not in p.stderr,
              p.stderr[-300:])
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(work).st_dev and \
            not dp.get("provisional"):
        other = tempfile.mkdtemp(dir=shm)
        try:
            p, _ = run(["profile", "--quick", "--out", disk_prof, "--disk-dir", other])
            dp = json.load(open(disk_prof))
            check("a directory on another device gets its own disk figures, the first kept",
                  p.returncode == 0 and "measuring the disk" in p.stderr and
                  [d["path"] for d in dp["other_disks"]] == [base], dp.get("other_disks"))
            p, _ = run(["profile", "--quick", "--out", disk_prof, "--disk-dir", os.path.join(work, "d1")])
            dp = json.load(open(disk_prof))
            check("going back to the first device takes its kept figures without measuring",
                  p.returncode == 0 and "with the disk figures of device" in p.stderr and
                  dp["disk"]["path"] == base and len(dp["other_disks"]) == 1, p.stderr[-300:])
        finally:
            shutil.rmtree(other, ignore_errors=True)
    else:
        print("note: /dev/shm is not another writable device here; the two-device case was not run")

    p, _ = run(["profile", "--show", "--out", out])
    check("--show prints the summary", p.returncode == 0 and "decode GB/s" in p.stdout, p.stdout[-400:])

    # Default location: $XDG_CACHE_HOME/moetier/profile.json
    p, _ = run(["profile", "--quick"])
    check("default path under XDG_CACHE_HOME",
          p.returncode == 0 and os.path.exists(os.path.join(work, "moetier", "profile.json")), p.stderr[-400:])

    def expect_error(label, argv, *needles):
        p, _ = run(argv)
        problems, msg = C.error_problems(p, needles)
        check(f"{label}: {msg}", not problems, "; ".join(problems) + "\n  stderr: " + p.stderr.strip()[:400])

    bad = os.path.join(work, "corrupt.json")
    with open(out) as f:
        text = f.read()
    with open(bad, "w") as f:
        f.write(text[: len(text) // 2])
    expect_error("truncated profile", ["profile", "--show", "--out", bad], bad, "moetier profile")
    missing_field = json.loads(text)
    del missing_field["ram"]["read_gbs"]
    with open(bad, "w") as f:
        json.dump(missing_field, f)
    expect_error("profile missing a field", ["profile", "--show", "--out", bad], "ram.read_gbs")
    expect_error("no profile", ["profile", "--show", "--out", os.path.join(work, "absent.json")], "absent.json")
    expect_error("unknown flag", ["profile", "--frobnicate"], "--frobnicate")
    expect_error("--show with --force", ["profile", "--show", "--force"], "--force")
    expect_error("disk dir that cannot be created",
                 ["profile", "--quick", "--force", "--out", os.path.join(work, "q.json"), "--disk-dir", out + "/sub"],
                 "disk")

    # A corrupt cache is measured again, not fatal, when measuring is allowed.
    with open(bad, "w") as f:
        f.write("{")
    p, _ = run(["profile", "--quick", "--out", bad])
    check("corrupt cache is re-measured", p.returncode == 0 and "warning" in p.stderr and json.load(open(bad)),
          p.stderr[-400:])

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
