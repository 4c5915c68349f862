#!/usr/bin/env python3
"""The fast CPU backend against the reference backend, end to end: tiny V3 and V3.2 (with more
tokens than index_topk, so the sparse selection drops keys), FP8 and BF16 checkpoints and a q8
store, as one prefill and token by token (--chunk 1: the decode GEMV path): cosine > 0.99999
and the same argmax at every position. --isa avx2 exercises the other SIMD path where the CPU
has AVX-512. A bad --backend is one error.
"""
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as C  # noqa: E402


def logits(exe, model, ids, out, *extra):
    return C.engine_logits(exe, model, ids, out, extra=extra)


def main():
    a = C.parse_args()
    ck = C.Checker()
    exe, work = a.moetier, a.workdir
    flags = open("/proc/cpuinfo").read()
    isas = [[]] + ([["--isa", "avx2"]] if " avx2" in flags and "avx512_vnni" in flags else [])
    for arch, dtype, seed in (("v3", "fp8", 61), ("v3.2", "fp8", 62), ("v3.2", "bf16", 63)):
        tag = f"{arch.replace('.', '')}_{dtype}"
        hf = os.path.join(work, f"hf_{tag}")
        cfg = C.make_model(exe, hf, arch=arch, seed=seed, dtype=dtype)
        ids = C.random_ids(int(cfg.get("index_topk", 12)) + 9, seed=seed)
        models = [(hf, tag)]
        if dtype == "fp8":
            store = os.path.join(work, f"store_{tag}")
            shutil.rmtree(store, ignore_errors=True)
            C.run_cli(exe, ["convert", hf, store, "--experts", "q8"])
            models.append((store, tag + " q8 store"))
        for model, name in models:
            for chunk in ([], ["--chunk", "1"]):
                ref = logits(exe, model, ids, os.path.join(work, "ref.npy"), "--backend", "reference", *chunk)
                for isa in isas:
                    got = logits(exe, model, ids, os.path.join(work, "cpu.npy"), "--backend", "cpu", *chunk, *isa)
                    cos = C.cosine_rows(ref, got)
                    label = f"{name} {' '.join(chunk) or 'prefill'} {' '.join(isa) or 'best ISA'}"
                    ck.check(f"{label}: cpu backend vs reference, cosine > 0.99999 and same argmax",
                             np.all(cos > 0.99999) and np.array_equal(ref.argmax(-1), got.argmax(-1)),
                             f"min cos {cos.min():.9f}")
    C.expect_error(ck, "an unknown --backend is refused",
                   [exe, "logits", "--model", hf, "--ids", "1,2", "--out", os.path.join(work, "x.npy"), "--backend", "gpu"],
                   "--backend")
    ck.finish()


if __name__ == "__main__":
    main()
