#!/usr/bin/env python3
"""The packed expert store end to end, through the CLI:
- convert HF -> store, for q8/q4/bf16; the packed engine's logits vs the checkpoint engine's
  (bf16: equal up to fp32 summation order; q8: same argmax everywhere, cosine > 0.999;
  q4: cosine > 0.93 — 4-bit group-32 costs ~13% relative error per expert, docs/kernels.md);
- make-model --packed writes exactly what make-model + convert writes (dense weights as stored
  and packed q8);
- streaming through a RAM cache far smaller than the experts gives the same logits as all
  experts in RAM (and pread = io_uring);
- a flipped byte or a truncated file, in a blob file and in the dense file, a format-1 store,
  an interrupted conversion: one clear error naming the file (and tensor or expert), no store
  that looks valid.
The dense weights stay as stored here (--dense bf16), so that the experts' formats are what is
compared; packed dense weights are compared in test_backends.py.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as C  # noqa: E402


def logits(ck, exe, model, ids, out, *extra):
    args = ["logits", "--model", model, "--ids", ",".join(map(str, ids)), "--out", out] + list(extra)
    C.run_cli(exe, args)
    return np.load(out).astype(np.float64)


def main():
    a = C.parse_args()
    ck = C.Checker()
    exe, work = a.moetier, a.workdir
    for arch, seed in (("v3", 21), ("v3.2", 22)):
        tag = arch.replace(".", "")
        hf = os.path.join(work, f"hf_{tag}")
        cfg = C.make_model(exe, hf, arch=arch, seed=seed, dtype="fp8")
        n = int(cfg.get("index_topk", 12)) + 7
        ids = C.random_ids(n, seed=seed)
        ref = logits(ck, exe, hf, ids, os.path.join(work, f"ref_{tag}.npy"))
        C.check_not_degenerate(ck, f"{arch} reference", ref)
        for quant, cos_min, same_argmax in (("bf16", 0.99999, True), ("q8", 0.999, True), ("q4", 0.93, False)):
            store = os.path.join(work, f"store_{tag}_{quant}")
            shutil.rmtree(store, ignore_errors=True)
            C.run_cli(exe, ["convert", hf, store, "--experts", quant, "--dense", "bf16"])
            ck.check(f"{arch} {quant}: store has a manifest and no .partial left",
                     os.path.exists(os.path.join(store, "manifest.json")) and not os.path.exists(store + ".partial"))
            got = logits(ck, exe, store, ids, os.path.join(work, f"{tag}_{quant}.npy"))
            cos = C.cosine_rows(ref, got)
            ck.check(f"{arch} {quant} store vs checkpoint engine: cosine > {cos_min} at every position",
                     np.all(cos > cos_min), f"min {cos.min():.7f}")
            agree = int(np.sum(np.argmax(ref, -1) == np.argmax(got, -1)))
            if same_argmax:
                # A flip is excused only where the reference's top two logits are closer than
                # three standard deviations of the measured quantisation error of that row.
                flips = [i for i in range(len(ids)) if np.argmax(ref[i]) != np.argmax(got[i])]
                top2 = np.sort(ref, axis=-1)[:, -2:]
                noise = np.std(ref - got, axis=-1)
                real = [i for i in flips if top2[i, 1] - top2[i, 0] > 3 * noise[i]]
                ck.check(f"{arch} {quant}: same argmax at every position (bar genuine ties)", not real,
                         f"{agree}/{len(ids)} agree; " + (f"{len(flips) - len(real)} flips at top-2 gaps below 3x the "
                                                          f"error std" if flips else "no flips"))
            else:
                ck.info(f"{arch} {quant}: argmax agrees at {agree}/{len(ids)} positions")
            # Every expert-kernel ISA this CPU has gives the same logits within the kernels'
            # activation rounding (the CLI passes --isa to the kernels as a value).
            for isa in ("scalar", "avx2", "avx512"):
                flags = C.cpu_flags()
                if (isa == "avx2" and "avx2" not in flags) or (isa == "avx512" and "avx512_vnni" not in flags):
                    continue
                s = logits(ck, exe, store, ids, os.path.join(work, f"{tag}_{quant}_{isa}.npy"), "--isa", isa)
                c = C.cosine_rows(got, s)
                ck.check(f"{arch} {quant} --isa {isa} vs the default kernels: cosine > 0.999", np.all(c > 0.999),
                         f"min {c.min():.7f}")
            if quant == "q4":
                # Streaming through a cache of 3 experts gives the same numbers as all in RAM.
                blob = json.load(open(os.path.join(store, "manifest.json")))["experts"]["blob_bytes"]
                budget = str(3 * blob)
                for extra, label in (([], "io_uring"), (["--pread"], "pread"), (["--no-prefetch"], "no prefetch")):
                    s = logits(ck, exe, store, ids, os.path.join(work, f"{tag}_stream.npy"), "--ram-budget", budget,
                               *extra)
                    ck.check(f"{arch} q4 streamed with a 3-expert cache ({label}) equals all-in-RAM",
                             np.array_equal(s, got), f"max |diff| {np.max(np.abs(s - got)):.3g}")
                s1 = logits(ck, exe, store, ids, os.path.join(work, f"{tag}_stream1.npy"), "--ram-budget", budget,
                            "--chunk", "1")
                ck.check(f"{arch} q4 streamed decode (--chunk 1) matches prefill",
                         np.all(C.cosine_rows(s1, got) > 0.9999), f"min {C.cosine_rows(s1, got).min():.7f}")

        # make-model --packed equals make-model + convert, byte for byte.
        conv_q8 = os.path.join(work, f"store_{tag}_q4_dense_q8")
        shutil.rmtree(conv_q8, ignore_errors=True)
        C.run_cli(exe, ["convert", hf, conv_q8, "--experts", "q4", "--dense", "q8"])
        for dense, conv in (("bf16", os.path.join(work, f"store_{tag}_q4")), ("q8", conv_q8)):
            direct = os.path.join(work, f"direct_{tag}_{dense}")
            shutil.rmtree(direct, ignore_errors=True)
            C.run_cli(exe, ["make-model", "--preset", "tiny", "--arch", arch, "--seed", seed, "--dtype", "fp8",
                            "--packed", "q4", "--dense", dense, "--out", direct])
            m1 = json.load(open(os.path.join(direct, "manifest.json")))
            m2 = json.load(open(os.path.join(conv, "manifest.json")))
            ck.check(f"{arch}: make-model --packed blobs equal convert's (crc32c of every blob)",
                     [b["crc32c"] for b in m1["blobs"]] == [b["crc32c"] for b in m2["blobs"]] and len(m1["blobs"]) > 0)
            same_dense = open(os.path.join(direct, "dense.bin"), "rb").read() == \
                open(os.path.join(conv, "dense.bin"), "rb").read()
            ck.check(f"{arch}: make-model --packed --dense {dense}: dense.bin equals convert's", same_dense)
            ck.check(f"{arch}: --dense {dense} manifest lists every dense tensor with its dtype",
                     m1["dense"] == m2["dense"] and m1["dense"]["quant"] == dense and
                     any(t["dtype"] == ("Q8_PACKED" if dense == "q8" else "F8_E4M3") for t in m1["dense"]["tensors"]))

    # Damage: a flipped byte is named; a truncated blob file is refused.
    store = os.path.join(work, "store_v3_q4")
    bad = os.path.join(work, "flipped")
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(store, bad)
    m = json.load(open(os.path.join(bad, "manifest.json")))
    b = m["blobs"][5]
    path = os.path.join(bad, m["files"][b["file"]])
    with open(path, "r+b") as f:
        f.seek(b["offset"] + 1000)
        byte = f.read(1)
        f.seek(b["offset"] + 1000)
        f.write(bytes([byte[0] ^ 0x40]))
    ids = ",".join(map(str, C.random_ids(12, seed=5)))
    # Every expert is loaded (and checked) at start-up when all fit in RAM.
    C.expect_error(ck, "flipped byte in a blob is detected and named",
                 [exe, "logits", "--model", bad, "--ids", ids, "--out", os.path.join(work, "x.npy")],
                 f"layer {b['layer']}", f"expert {b['expert']}")
    trunc = os.path.join(work, "truncated")
    shutil.rmtree(trunc, ignore_errors=True)
    shutil.copytree(store, trunc)
    path = os.path.join(trunc, m["files"][-1])
    os.truncate(path, os.path.getsize(path) // 2)
    C.expect_error(ck, "truncated blob file is refused", [exe, "logits", "--model", trunc, "--ids", ids, "--out",
                                                        os.path.join(work, "x.npy")], m["files"][-1])

    # The dense file: a flipped byte names the file and the tensor; truncation is refused.
    for dense_store in (store, os.path.join(work, "store_v3_q4_dense_q8")):
        m = json.load(open(os.path.join(dense_store, "manifest.json")))
        t = max(m["dense"]["tensors"], key=lambda t: t["bytes"])  # lm_head or the embedding
        bad = os.path.join(work, "flipped_dense")
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(dense_store, bad)
        with open(os.path.join(bad, "dense.bin"), "r+b") as f:
            f.seek(t["offset"] + t["bytes"] // 2)
            byte = f.read(1)
            f.seek(t["offset"] + t["bytes"] // 2)
            f.write(bytes([byte[0] ^ 0x01]))
        C.expect_error(ck, f"flipped byte in dense.bin ({m['dense']['quant']}) is detected and named",
                       [exe, "logits", "--model", bad, "--ids", ids, "--out", os.path.join(work, "x.npy")],
                       "dense.bin", f"'{t['name']}'", "corrupt", "re-run moetier convert")
        os.truncate(os.path.join(bad, "dense.bin"), t["offset"] + 8)
        C.expect_error(ck, f"truncated dense.bin ({m['dense']['quant']}) is refused",
                       [exe, "logits", "--model", bad, "--ids", ids, "--out", os.path.join(work, "x.npy")],
                       "dense.bin is truncated", "re-run moetier convert")
    # A format-1 store (dense tensors unchecked) is refused with what to do.
    old = os.path.join(work, "format1")
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(store, old)
    m = json.load(open(os.path.join(old, "manifest.json")))
    m["version"] = 1
    m.pop("dense")
    m["dense_file"] = "dense.safetensors"
    json.dump(m, open(os.path.join(old, "manifest.json"), "w"))
    C.expect_error(ck, "a format-1 store is refused with 're-run moetier convert'",
                   [exe, "logits", "--model", old, "--ids", ids, "--out", os.path.join(work, "x.npy")],
                   "format version 1", "re-run moetier convert")

    # Interrupted conversion: kill it mid-way; no store at DST, and re-running succeeds.
    big = os.path.join(work, "hf_demo")
    C.make_model(exe, big, arch="v3", seed=3, dtype="fp8", preset="demo")
    dst = os.path.join(work, "interrupted")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.rmtree(dst + ".partial", ignore_errors=True)
    p = subprocess.Popen([exe, "convert", big, dst, "--experts", "q8"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not os.path.exists(dst + ".partial") and time.time() - t0 < 60 and p.poll() is None:
        time.sleep(0.005)
    time.sleep(0.05)
    killed = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait()
    ck.check("interrupted conversion leaves no store at DST", not os.path.exists(dst),
             "killed mid-way" if killed else "finished before the kill (test inconclusive)")
    C.expect_error(ck, "an unknown --isa is refused", [exe, "logits", "--model", store, "--ids", ids, "--out",
                                                       os.path.join(work, "x.npy"), "--isa", "avx9"], "--isa")
    C.expect_error(ck, "the partial directory is not accepted as a model",
                 [exe, "logits", "--model", dst + ".partial", "--ids", "1,2", "--out", os.path.join(work, "y.npy")],
                 "partial")
    C.run_cli(exe, ["convert", big, dst, "--experts", "q8"])
    ck.check("re-running the conversion succeeds", os.path.exists(os.path.join(dst, "manifest.json")))
    ck.finish()


if __name__ == "__main__":
    main()
