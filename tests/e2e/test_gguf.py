"""`moetier gguf` against llama.cpp's own `gguf` Python package (PyPI), the independent reference:

- files written by gguf's GGUFWriter (one file, a split model, a custom alignment) read back with
  the same metadata and tensor table that gguf's GGUFReader sees;
- every type moetier decodes (F32, F16, BF16, Q8_0, Q2_K..Q6_K), on random blocks, equals gguf's
  NumPy dequantisation bit for bit;
- malformed files (truncated, misaligned, overlapping, lying sizes, bad magic/version/types,
  strings and arrays longer than the file, a missing or inconsistent split) each give one clear
  error naming the file and the tensor or key, and a type moetier cannot decode is refused by name.
"""

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as C  # noqa: E402

try:
    import gguf  # noqa: E402
    from gguf import GGMLQuantizationType as Q  # noqa: E402
except ImportError:  # a missing reference is a failure, not a skip
    print("FAIL import gguf: run scripts/setup.sh --tests (installs the gguf package into .venv)")
    print("0 passed, 1 failed")
    sys.exit(1)

F16_FIELDS = {  # byte offsets of the fp16 scale fields in one block
    Q.Q8_0: [0], Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}


def random_blocks(rng, qtype, rows, cols):
    """Random raw blocks of `qtype` for a [rows, cols] tensor, with finite fp16 scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    nb = cols // block
    raw = rng.integers(0, 256, size=(rows, nb, size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        vals = (rng.standard_normal((rows, nb)) * 0.05).astype(np.float16)
        raw[:, :, off:off + 2] = vals.view(np.uint8).reshape(rows, nb, 2)
    return raw.reshape(rows, nb * size)


def write_model(path, tensors, kv, split_max_tensors=0, alignment=None):
    w = gguf.GGUFWriter(path, "deepseek2", split_max_tensors=split_max_tensors)
    if alignment:
        w.add_custom_alignment(alignment)
    for k, v in kv:
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        else:
            w.add_array(k, v)
    for name, arr, qtype in tensors:
        if qtype is None:
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, arr, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def raw_gguf(path, tensors, data, kv=(), version=3, alignment=32, magic=b"GGUF", n_tensors=None):
    """A GGUF file byte by byte, for the malformed cases: tensors = [(name, type, dims, offset)];
    kv = [(key, type id, payload bytes)]."""
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b
    out = bytearray(magic + struct.pack("<I", version))
    out += struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors, len(kv))
    for key, t, payload in kv:
        out += s(key) + struct.pack("<I", t) + payload
    for name, t, dims, off in tensors:
        out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", t, off)
    out += b"\0" * ((-len(out)) % alignment)
    out += data
    with open(path, "wb") as f:
        f.write(out)


def main():
    a = C.parse_args()
    ck = C.Checker()
    exe, work = a.moetier, a.workdir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rng = np.random.default_rng(7)

    # ---- a model with every decodable type, and metadata of every kind ----
    dense = rng.standard_normal((3, 64)).astype(np.float32)
    tensors = [
        ("token_embd.weight", dense, None),
        ("blk.0.attn_norm.weight", rng.standard_normal(96).astype(np.float32), None),
        ("blk.0.attn_q_a.weight", rng.standard_normal((5, 96)).astype(np.float16), None),
        ("blk.0.bf16.weight", gguf.quants.quantize(rng.standard_normal((4, 32)).astype(np.float32), Q.BF16), Q.BF16),
        ("blk.0.q8.weight", gguf.quants.quantize(rng.standard_normal((7, 96)).astype(np.float32), Q.Q8_0), Q.Q8_0),
    ]
    raw_types = [Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
    for qt in raw_types:
        cols = 64 if qt == Q.Q8_0 else 512
        tensors.append((f"blk.1.ffn_{qt.name.lower()}_exps.weight", random_blocks(rng, qt, 3, cols), qt))
    kv = [("deepseek2.block_count", 61), ("deepseek2.expert_count", 256), ("deepseek2.rope.freq_base", 10000.0),
          ("deepseek2.expert_weights_norm", True), ("general.name", "tiny test"),
          ("tokenizer.ggml.model", "gpt2"), ("tokenizer.ggml.tokens", ["a", "b", "<｜begin▁of▁sentence｜>"]),
          ("tokenizer.ggml.scores", [0.5, -1.25, 3.0])]
    one = os.path.join(work, "tiny.gguf")
    write_model(one, tensors, kv)

    def read_json(path):
        j = os.path.join(work, "info.json")
        if os.path.exists(j):
            os.remove(j)
        C.run_cli(exe, ["gguf", path, "--tensors", "--json", j])
        with open(j) as f:
            return json.load(f)

    def check_against_reader(tag, path, reader_files):
        info = read_json(path)
        ref_kv, ref_t = {}, []
        for rf in reader_files:
            r = gguf.GGUFReader(rf)
            if not ref_kv:
                for name, field in r.fields.items():
                    if name.startswith("GGUF."):
                        continue
                    vt = field.types[0]
                    if vt == gguf.GGUFValueType.ARRAY:
                        ref_kv[name] = {"count": len(field.data)}
                    elif vt == gguf.GGUFValueType.STRING:
                        ref_kv[name] = bytes(field.parts[field.data[0]]).decode()
                    else:
                        ref_kv[name] = field.parts[field.data[0]].tolist()[0]
            for t in r.tensors:
                ref_t.append((t.name, t.tensor_type.name, [int(x) for x in t.shape], int(t.n_bytes)))
        got_kv = {k: ({"count": v["count"]} if isinstance(v, dict) else v) for k, v in info["metadata"].items()}
        same_kv = set(got_kv) == set(ref_kv) and all(
            (abs(got_kv[k] - ref_kv[k]) <= 1e-6 * abs(ref_kv[k]) if isinstance(ref_kv[k], float) else got_kv[k] == ref_kv[k])
            for k in ref_kv)
        ck.check(f"{tag}: metadata equals GGUFReader's", same_kv,
                 "" if same_kv else f"moetier {got_kv} | gguf {ref_kv}")
        got_t = [(t["name"], t["type"], t["dims"], t["bytes"]) for t in info["tensors"]]
        ck.check(f"{tag}: tensor table equals GGUFReader's", got_t == ref_t,
                 "" if got_t == ref_t else f"moetier {got_t[:3]} | gguf {ref_t[:3]}")
        return info

    ck.guard("single file", lambda: check_against_reader("single file", one, [one]))

    # Every tensor decoded equals gguf's dequantisation, bit for bit.
    r = gguf.GGUFReader(one)
    for t in r.tensors:
        def one_tensor(t=t):
            out = os.path.join(work, "t.npy")
            C.run_cli(exe, ["gguf", one, "--tensor", t.name, "--out", out])
            got = np.load(out)
            ref = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            ref = ref.reshape(tuple(int(x) for x in reversed(t.shape)))
            same = got.shape == ref.shape and np.array_equal(got.view(np.uint32), ref.view(np.uint32))
            diff = "" if same or got.shape != ref.shape else f"max |diff| {np.max(np.abs(got - ref))}"
            ck.check(f"decode {t.tensor_type.name} ({t.name}) equals gguf's, bit for bit", same,
                     f"shape {got.shape} vs {ref.shape} {diff}" if not same else "")
        ck.guard(f"decode {t.name}", one_tensor)

    # ---- a split model, opened from any part; a custom alignment ----
    split = os.path.join(work, "split", "model.gguf")
    os.makedirs(os.path.dirname(split))
    write_model(split, tensors, kv, split_max_tensors=4)
    parts = sorted(os.path.join(os.path.dirname(split), f) for f in os.listdir(os.path.dirname(split)))
    ck.check("gguf wrote a split model", len(parts) == 3 and parts[0].endswith("-00001-of-00003.gguf"), str(parts))
    ck.guard("split model", lambda: check_against_reader("split model (from part 2)", parts[1], parts))
    aligned = os.path.join(work, "aligned.gguf")
    write_model(aligned, tensors, kv, alignment=64)
    ck.guard("alignment 64", lambda: check_against_reader("general.alignment 64", aligned, [aligned]))

    # ---- malformed files ----
    bad = os.path.join(work, "bad.gguf")
    good = open(one, "rb").read()
    with open(bad, "wb") as f:
        f.write(good[:-100])
    C.expect_error(ck, "a truncated download", [exe, "gguf", bad], "bad.gguf", "runs past the end", "truncated")
    with open(bad, "wb") as f:
        f.write(good[:200])
    C.expect_error(ck, "a file cut inside its header", [exe, "gguf", bad], "bad.gguf")
    F32 = 0
    d = b"\0" * 256
    cases = [
        ("bad magic", dict(tensors=[], data=b"", magic=b"GGUX"), ["not a GGUF file"]),
        ("version 1", dict(tensors=[], data=b"", version=1), ["version 1"]),
        ("big-endian", dict(tensors=[], data=b"", version=0x03000000), ["big-endian"]),
        ("misaligned offset", dict(tensors=[("w", F32, [8], 4)], data=d), ["'w'", "multiple of the alignment"]),
        ("overlapping tensors", dict(tensors=[("a", F32, [16], 0), ("b", F32, [16], 32)], data=d), ["'a'", "'b'", "overlap"]),
        ("a size past the end", dict(tensors=[("big", F32, [1024, 1024], 0)], data=d), ["'big'", "runs past the end"]),
        ("unknown tensor type", dict(tensors=[("w", 99, [32], 0)], data=d), ["'w'", "unknown tensor type 99"]),
        ("rows not whole blocks", dict(tensors=[("w", int(Q.Q4_K), [100], 0)], data=d), ["'w'", "Q4_K", "blocks"]),
        ("a zero dimension", dict(tensors=[("w", F32, [0], 0)], data=d), ["'w'", "dimension 0"]),
        ("five dimensions", dict(tensors=[("w", F32, [1, 1, 1, 1, 1], 0)], data=d), ["'w'", "5 dimensions"]),
        ("duplicate tensor", dict(tensors=[("w", F32, [8], 0), ("w", F32, [8], 32)], data=d), ["'w'", "twice"]),
        ("too many tensors claimed", dict(tensors=[], data=b"", n_tensors=1 << 40), ["tensors"]),
        ("string longer than the file", dict(tensors=[], data=b"", kv=[("k", 8, struct.pack("<Q", 1 << 40))]), ["'k'"]),
        ("array longer than the file", dict(tensors=[], data=b"", kv=[("arr", 9, struct.pack("<IQ", 4, 1 << 40))]), ["'arr'", "cannot fit"]),
        ("unknown value type", dict(tensors=[], data=b"", kv=[("k", 77, b"")]), ["'k'", "unknown value type"]),
        ("a bool of 2", dict(tensors=[], data=b"", kv=[("flag", 7, b"\x02")]), ["'flag'", "bool"]),
        ("duplicate key", dict(tensors=[], data=b"", kv=[("k", 4, b"\1\0\0\0"), ("k", 4, b"\2\0\0\0")]), ["'k'", "twice"]),
        ("alignment not a power of two", dict(tensors=[], data=b"", kv=[("general.alignment", 4, struct.pack("<I", 48))]), ["general.alignment"]),
    ]
    for name, kwargs, needles in cases:
        raw_gguf(bad, **kwargs)
        C.expect_error(ck, f"malformed: {name}", [exe, "gguf", bad], "bad.gguf", *needles)

    # A split with a part missing, and a part whose split.no lies.
    sdir = os.path.join(work, "split")
    os.rename(parts[2], parts[2] + ".away")
    C.expect_error(ck, "a split model with a part missing", [exe, "gguf", parts[0]], "00003-of-00003", "missing")
    os.rename(parts[2] + ".away", parts[2])
    lie = os.path.join(work, "lie")
    os.makedirs(lie)
    for k, p in enumerate(parts):
        shutil.copy(parts[(k + 1) % 3] if k < 2 else p, os.path.join(lie, os.path.basename(p)))
    C.expect_error(ck, "split parts out of order (split.no)", [exe, "gguf", os.path.join(lie, os.path.basename(parts[0]))],
                   "split.no")

    # A type moetier cannot decode is refused by name; reading its table still works.
    iq = os.path.join(work, "iq.gguf")
    block, size = gguf.GGML_QUANT_SIZES[Q.IQ2_XXS]
    write_model(iq, [("blk.3.ffn_down_exps.weight", np.zeros((2, size), dtype=np.uint8), Q.IQ2_XXS)], [])
    p = subprocess.run([exe, "gguf", iq], capture_output=True, text=True, timeout=60)
    ck.check("a file with IQ2_XXS is read, the type named as not decodable",
             p.returncode == 0 and "IQ2_XXS" in p.stdout and "blk.3.ffn_down_exps.weight" in p.stdout, p.stdout[-400:])
    C.expect_error(ck, "decoding an IQ2_XXS tensor is refused by name",
                   [exe, "gguf", iq, "--tensor", "blk.3.ffn_down_exps.weight", "--out", os.path.join(work, "x.npy")],
                   "blk.3.ffn_down_exps.weight", "IQ2_XXS")
    C.expect_error(ck, "a tensor that is not there", [exe, "gguf", one, "--tensor", "nope", "--out", os.path.join(work, "x.npy")],
                   "nope")
    ck.finish()


if __name__ == "__main__":
    main()
