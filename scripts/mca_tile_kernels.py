#!/usr/bin/env python3
"""Static throughput of the GGUF tile kernels per CPU model, from llvm-mca (LLVM's scheduling
models): cycles per 64-byte line of tiles, one token. It needs no such CPU, so it gives the AVX2
kernels' figure on Zen 3 (`znver3`) from any machine, and its figures do not move with the load
of a shared host. A model, not a measurement: use it to compare two forms of a kernel, and
docs/benchmarks.md's measured ratios for what a kernel reaches.

    python3 scripts/mca_tile_kernels.py [--cpu znver3,icelake-server] [-- extra g++ flags]

Each kernel's block loop (one tile block: 16 rows x 256 values, 32 for Q8_0) is marked for
llvm-mca in a temporary copy of its source, with the loops inside it unrolled so the region is
the whole block; only the 1-token instance is built. Needs g++ and llvm-mca (Debian's
llvm-14-tools: `llvm-mca-14`).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS_AVX512 = "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16 -mfma -mf16c -mbmi2".split()
FILES = {  # source -> target flags (as CMakeLists.txt builds it)
    "cpu_kernels/ggml_gemv_tiles_avx2.cpp": "-mavx2 -mfma -mf16c -mbmi2".split(),
    "cpu_kernels/ggml_gemv_tiles_avx512.cpp": FLAGS_AVX512,
    "cpu_kernels/ggml_gemv_tiles_gfni_avx512.cpp": FLAGS_AVX512 + ["-mgfni", "-mavx512vbmi"],
}
AVX512_MODELS = ("skylake-avx512", "cascadelake", "cooperlake", "icelake", "tigerlake", "sapphirerapids", "znver4")
GFNI_VBMI_MODELS = ("icelake", "tigerlake", "sapphirerapids", "znver4")  # the models of CPUs with both
LINES_PER_BLOCK = {"q2k": 16, "q3k": 24, "q4k": 32, "q5k": 40, "q6k": 48, "q8_0": 8}
TYPE = {"q2k": "Q2_K", "q3k": "Q3_K", "q4k": "Q4_K", "q5k": "Q5_K", "q6k": "Q6_K", "q8_0": "Q8_0"}


def mark(src: str) -> str:
    """The source with each tile_* kernel's block loop between llvm-mca markers, the loops inside
    unrolled, and only the NT = 1 instances referenced."""
    src = re.sub(r"case [234]: return [\w:]+<[234]>(\(type\))?;", "", src)
    out, name, depth = [], None, None
    for line in src.split("\n"):
        m = re.search(r"void tile_(\w+)\(", line)
        if m:
            name = m.group(1)
        indent = len(line) - len(line.lstrip())
        if depth is not None and re.match(r"\s*for \(int ", line):
            out.append("#pragma GCC unroll 64")
        if depth is not None and line.strip() == "}" and indent == depth:
            out.append(f'__asm__ volatile("# LLVM-MCA-END {name}");')
            depth = name = None
        out.append(line)
        if name and depth is None and re.match(r"\s*for \(int64_t b = 0; b < blocks; \+\+b\) \{", line):
            out.append(f'__asm__ volatile("# LLVM-MCA-BEGIN {name}");')
            depth = indent
    return "\n".join(out)


def loops(asm: str) -> set:
    """The regions holding a backward branch: a loop the unrolling missed, whose body llvm-mca
    would count once per block (the figure would be too low)."""
    found, region, labels = set(), None, set()
    for line in asm.split("\n"):
        m = re.search(r"LLVM-MCA-(BEGIN|END) (\w+)", line)
        if m:
            region, labels = (m.group(2), set()) if m.group(1) == "BEGIN" else (None, set())
            continue
        if region is None:
            continue
        m = re.match(r"(\.L\w+):", line)
        if m:
            labels.add(m.group(1))
        m = re.match(r"\s+j\w+\s+(\.L\w+)", line)
        if m and m.group(1) in labels:
            found.add(region)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", default="znver3,icelake-server", help="llvm-mca CPU models, comma-separated")
    ap.add_argument("extra", nargs="*", help="extra g++ flags (after --)")
    args = ap.parse_args()
    mca = shutil.which("llvm-mca") or shutil.which("llvm-mca-14")
    if not mca:
        print("mca_tile_kernels: llvm-mca not found (Debian: apt-get install llvm-14-tools)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rel, flags in FILES.items():
            models = GFNI_VBMI_MODELS if "gfni" in rel else AVX512_MODELS if "avx512" in rel else None
            cpus = [c for c in args.cpu.split(",") if models is None or c.startswith(models)]
            if not cpus:
                continue
            cpp, asm = os.path.join(tmp, "k.cpp"), os.path.join(tmp, "k.s")
            with open(os.path.join(ROOT, rel)) as f, open(cpp, "w") as g:
                g.write(mark(f.read()))
            subprocess.run(["g++", "-O3", "-std=c++20", "-I", ROOT, *flags, *args.extra, "-S", cpp, "-o", asm], check=True)
            with open(asm) as f:
                looped = loops(f.read())
            for cpu in cpus:
                r = subprocess.run([mca, f"-mcpu={cpu}", "-iterations=100", "-all-views=false", "-summary-view", asm],
                                   capture_output=True, text=True, check=True)
                region = None
                for line in r.stdout.split("\n"):
                    m = re.match(r"\[\d+\] Code Region - (\w+)", line)
                    if m:
                        region = m.group(1)
                    m = re.match(r"Total Cycles:\s+(\d+)", line)
                    if m and region:
                        per_line = int(m.group(1)) / 100 / LINES_PER_BLOCK[region]
                        note = "  (a loop stayed: too low)" if region in looped else ""
                        rows.append((TYPE[region], os.path.basename(rel), cpu, per_line, note))
    print(f"{'type':6s} {'file':32s} {'cpu':16s} {'cycles/line':>11s}")
    for t, f, cpu, c, note in sorted(rows):
        print(f"{t:6s} {f:32s} {cpu:16s} {c:11.2f}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
