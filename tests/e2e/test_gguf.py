"""`moetier gguf` against llama.cpp's own `gguf` Python package (PyPI), the independent reference:

- files written by gguf's GGUFWriter (one file, a split model, a custom alignment) read back with
  the same metadata and tensor table that gguf's GGUFReader sees;
- every type moetier decodes (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K), on random blocks, equals gguf's
  NumPy dequantisation bit for bit;
- malformed files (truncated, misaligned, overlapping, lying sizes, bad magic/version/types,
  strings and arrays longer than the file, a missing or inconsistent split) each give one clear
  error naming the file and the tensor or key, and a type moetier cannot decode is refused by name.
"""

import json
import os
import re
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
    import hf_to_gguf  # noqa: E402  (tests/reference, on the path through e2e_common)
except ImportError:  # a missing reference is a failure, not a skip
    print("FAIL import gguf: run scripts/setup.sh --tests (installs the gguf package into .venv)")
    print("0 passed, 1 failed")
    sys.exit(1)

F16_FIELDS = {  # byte offsets of the fp16 scale fields in one block
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0], Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
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
    hf_to_gguf.add_kv(w, kv)
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


def deepseek2_tensors(rng, H=256, F=512, E=8, W=256, heads=4, q_lora=64, kv_lora=64, rope=16, nope=32, v=32,
                      vocab=1000, layers=3, dense_layers=1):
    """A deepseek2 model's tensors in llama.cpp's layout (ggml shapes, innermost first), with a
    Q4_K_M-like mix of types: name -> (qtype, dims)."""
    t = {"token_embd.weight": (Q.Q8_0, [H, vocab]), "output_norm.weight": (Q.F32, [H]), "output.weight": (Q.Q6_K, [H, vocab])}
    for l in range(layers):
        b = f"blk.{l}."
        t[b + "attn_norm.weight"] = (Q.F32, [H])
        t[b + "attn_q_a.weight"] = (Q.Q8_0, [H, q_lora])
        t[b + "attn_q_a_norm.weight"] = (Q.F32, [q_lora])
        t[b + "attn_q_b.weight"] = (Q.Q8_0, [q_lora, heads * (nope + rope)])
        t[b + "attn_kv_a_mqa.weight"] = (Q.Q8_0, [H, kv_lora + rope])
        t[b + "attn_kv_a_norm.weight"] = (Q.F32, [kv_lora])
        t[b + "attn_kv_b.weight"] = (Q.Q8_0, [kv_lora, heads * (nope + v)])
        t[b + "attn_output.weight"] = (Q.Q8_0, [heads * v, H])
        t[b + "ffn_norm.weight"] = (Q.F32, [H])
        if l < dense_layers:
            t[b + "ffn_gate.weight"] = (Q.Q4_K, [H, F])
            t[b + "ffn_up.weight"] = (Q.Q4_K, [H, F])
            t[b + "ffn_down.weight"] = (Q.Q6_K, [F, H])
        else:
            t[b + "ffn_gate_inp.weight"] = (Q.F32, [H, E])
            t[b + "exp_probs_b.bias"] = (Q.F32, [E])
            t[b + "ffn_gate_exps.weight"] = (Q.Q4_K, [H, W, E])
            t[b + "ffn_up_exps.weight"] = (Q.Q4_K, [H, W, E])
            t[b + "ffn_down_exps.weight"] = (Q.Q6_K if l % 2 else Q.Q4_K, [W, H, E])
            t[b + "ffn_gate_shexp.weight"] = (Q.Q8_0, [H, W])
            t[b + "ffn_up_shexp.weight"] = (Q.Q8_0, [H, W])
            t[b + "ffn_down_shexp.weight"] = (Q.Q8_0, [W, H])
    return t


def plan_deepseek2(ck, exe, work, rng):
    H, F, E, W, heads, q_lora, kv_lora, rope, nope, v, vocab, layers, dense = 256, 512, 8, 256, 4, 64, 64, 16, 32, 32, 1000, 3, 1
    spec = deepseek2_tensors(rng)
    tensors = []
    for name, (qt, dims) in spec.items():
        rows = int(np.prod(dims[1:])) if len(dims) > 1 else 1
        if qt == Q.F32:
            arr = rng.standard_normal(list(reversed(dims))).astype(np.float32)
            tensors.append((name, arr, None))
        else:
            raw = random_blocks(rng, qt, rows, dims[0]).reshape(list(reversed(dims[1:])) + [-1])
            tensors.append((name, raw, qt))
    kv = [("deepseek2.block_count", layers), ("deepseek2.context_length", 4096), ("deepseek2.embedding_length", H),
          ("deepseek2.feed_forward_length", F), ("deepseek2.attention.head_count", heads),
          ("deepseek2.attention.head_count_kv", heads), ("deepseek2.rope.freq_base", 10000.0),
          ("deepseek2.attention.layer_norm_rms_epsilon", 1e-6), ("deepseek2.expert_used_count", 2),
          ("deepseek2.leading_dense_block_count", dense), ("deepseek2.vocab_size", vocab),
          ("deepseek2.attention.q_lora_rank", q_lora), ("deepseek2.attention.kv_lora_rank", kv_lora),
          ("deepseek2.attention.key_length", nope + rope), ("deepseek2.attention.value_length", v),
          ("deepseek2.expert_feed_forward_length", W), ("deepseek2.expert_count", E),
          ("deepseek2.expert_shared_count", 1), ("deepseek2.expert_weights_scale", 2.5),
          ("deepseek2.expert_weights_norm", True), ("deepseek2.expert_gating_func", 2),
          ("deepseek2.rope.dimension_count", rope)]
    path = os.path.join(work, "ds2.gguf")
    write_model(path, tensors, kv)
    r = gguf.GGUFReader(path)
    experts = sum(int(t.n_bytes) for t in r.tensors if "_exps." in t.name)
    rest = sum(int(t.n_bytes) for t in r.tensors if "_exps." not in t.name)
    out = os.path.join(work, "plan.json")
    p = C.run_cli(exe, ["plan", "--model", path, "--hardware", "ram=64G@50GB/s,disk=3GB/s,cores=8,isa=avx2",
                        "--no-gpu", "--json", out])
    with open(out) as f:
        plan = json.load(f)
    mean_expert = -(-experts // ((layers - dense) * E))
    ck.check("plan --model X.gguf: one expert is the GGUF's mean expert, in bytes",
             plan.get("expert_bytes") == mean_expert, f"plan {plan.get('expert_bytes')} vs {mean_expert}")
    ck.check("plan --model X.gguf: says the sizes are the GGUF's, with its types",
             "as the GGUF holds them" in p.stdout and "Q4_K" in p.stdout and "Q6_K" in p.stdout, p.stdout[-600:])
    # The non-expert weights are charged at the GGUF's size: the same model with its attention
    # outputs in F16 instead of Q8_0 reserves exactly the difference more RAM.
    wide = [(n, (gguf.quants.dequantize(a, q).astype(np.float16) if n.endswith("attn_output.weight") else a),
             (None if n.endswith("attn_output.weight") else q)) for n, a, q in tensors]
    path16 = os.path.join(work, "ds2_f16.gguf")
    write_model(path16, wide, kv)
    rest16 = sum(int(t.n_bytes) for t in gguf.GGUFReader(path16).tensors if "_exps." not in t.name)
    out16 = os.path.join(work, "plan16.json")
    C.run_cli(exe, ["plan", "--model", path16, "--hardware", "ram=64G@50GB/s,disk=3GB/s,cores=8,isa=avx2",
                    "--no-gpu", "--json", out16])
    with open(out16) as f:
        plan16 = json.load(f)
    grew = plan16["plan"]["ram_reserved_bytes"] - plan["plan"]["ram_reserved_bytes"]
    ck.check("plan --model X.gguf: the non-expert weights are charged at the GGUF's own size",
             rest16 > rest and grew == rest16 - rest, f"reserved {grew} more, the files differ by {rest16 - rest}")
    ck.check("plan --model X.gguf: says the weights are as the file holds them",
             "dense weights: as the file holds them" in p.stdout, p.stdout[:600])
    # Each block type at its own tile kernel's rate from the profile: the experts' rate is their
    # bytes over the time each type's share takes (computed here from the file's tensors).
    prof = os.path.join(work, "profile.json")
    C.run_cli(exe, ["profile", "--quick", "--out", prof])
    with open(prof) as f:
        pj = json.load(f)
    rates = {"Q4_K": 40.0, "Q6_K": 10.0, "Q8_0": 25.0}
    pj["kernels"] = [k for k in pj["kernels"] if k["format"] in ("q4", "q8", "bf16")]
    pj["kernels"] += [{"format": t, "decode_gbs": g, "prefill_gflops": 100.0} for t, g in rates.items()]
    with open(prof, "w") as f:
        json.dump(pj, f)
    by_type = {}
    for t in r.tensors:
        if "_exps." in t.name:
            by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
    want = sum(by_type.values()) / sum(b / rates[q] for q, b in by_type.items())
    p = C.run_cli(exe, ["plan", "--model", path, "--profile", prof, "--no-gpu"])
    m = re.search(r"CPU decode rates by block type: experts Q4_K 40\.0, Q6_K 10\.0 GB/s -> ([0-9.]+) GB/s", p.stdout)
    ck.check("plan --model X.gguf: the experts at their block types' measured rates, mixed by time",
             m is not None and abs(float(m.group(1)) - want) <= 0.051, f"want {want:.2f}: {p.stdout[:900]}")
    ck.check("plan --model X.gguf: the header says the block types' rates are used",
             "planned at their block types' rates" in p.stdout, p.stdout[:300])
    # A machine whose available RAM the file would not fit in 0.8 of: generate would not tile it,
    # so the tile rates do not apply (the budget given, or the plan would not fit at all).
    small = dict(pj, ram=dict(pj["ram"], available_bytes=1000000))
    small_path = os.path.join(work, "profile_small.json")
    with open(small_path, "w") as f:
        json.dump(small, f)
    p = C.run_cli(exe, ["plan", "--model", path, "--profile", small_path, "--no-gpu", "--ram-budget", "1G"])
    ck.check("plan --model X.gguf: a file over 0.8 of the available RAM is planned from its blocks, said so",
             "would run from its blocks, not row tiles" in p.stdout and "CPU decode rates by block type" not in p.stdout
             and "planned at the rates of q4" in p.stdout, p.stdout[:900])
    # A profile without them (measured before the tile kernels were timed): the stand-in, said so.
    pj["kernels"] = [k for k in pj["kernels"] if k["format"] in ("q4", "q8", "bf16")]
    with open(prof, "w") as f:
        json.dump(pj, f)
    p = C.run_cli(exe, ["plan", "--model", path, "--profile", prof, "--no-gpu"])
    ck.check("plan --model X.gguf: types the profile has no rate for are named, at the stand-in's rate",
             "no tile rate in this profile (described, older than revision 4, or capped below AVX2), so at moetier's q4 rate: Q4_K, Q6_K" in p.stdout and
             "planned at the rates of q4" in p.stdout, p.stdout[:900])
    # A deepseek2 file whose expert tensor disagrees with the metadata names the tensor.
    bad = [(n, (a if n != "blk.2.ffn_down_exps.weight" else a[:, :128]), q) for n, a, q in tensors]
    write_model(os.path.join(work, "ds2bad.gguf"), bad, kv)
    C.expect_error(ck, "plan: an expert tensor of the wrong shape", [exe, "plan", "--model", os.path.join(work, "ds2bad.gguf"),
                   "--hardware", "ram=64G@50GB/s,disk=3GB/s,cores=8,isa=avx2", "--no-gpu"],
                   "blk.2.ffn_down_exps.weight", "shape")
    no_gating = [x for x in kv if x[0] != "deepseek2.expert_gating_func"]
    write_model(os.path.join(work, "ds2v2.gguf"), tensors, no_gating)
    C.expect_error(ck, "plan: no expert_gating_func (a DeepSeek V2 file) is refused", [exe, "plan", "--model",
                   os.path.join(work, "ds2v2.gguf"), "--hardware", "ram=64G@50GB/s,disk=3GB/s,cores=8,isa=avx2", "--no-gpu"],
                   "expert_gating_func absent", "softmax")
    kv_missing = [x for x in kv if x[0] != "deepseek2.expert_count"]
    write_model(os.path.join(work, "ds2nokey.gguf"), tensors, kv_missing)
    C.expect_error(ck, "plan: a missing deepseek2 key", [exe, "plan", "--model", os.path.join(work, "ds2nokey.gguf"),
                   "--hardware", "ram=64G@50GB/s,disk=3GB/s,cores=8,isa=avx2", "--no-gpu"],
                   "deepseek2.expert_count")


def tokenizer_from_gguf(ck, exe, work):
    """A GGUF holding DeepSeek V3's tokenizer as llama.cpp's converter writes it (tokens in id
    order, added tokens typed control/user-defined, merges, pre 'deepseek-v3', BOS/EOS, the chat
    template): `moetier tokenize` on it gives the golden ids, without a tokenizer.json beside it."""
    data = os.path.join(os.path.dirname(C.HERE), "..", "data", "tokenizer-deepseek-v3")
    d = os.path.join(work, "tok")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.gguf")
    w = gguf.GGUFWriter(path, "deepseek2")
    hf_to_gguf.add_tokenizer(w, data)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_tensor("token_embd.weight", np.zeros((2, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    lines = [json.loads(l) for l in open(os.path.join(data, "golden_public.jsonl"), encoding="utf-8") if l.strip()]
    inp = "".join(json.dumps({"text": l["text"]}) + "\n" for l in lines)
    p = subprocess.run([exe, "tokenize", "--tokenizer", path, "--jsonl"], input=inp, capture_output=True,
                       text=True, timeout=300)
    got = [json.loads(l)["ids"] for l in p.stdout.splitlines() if l.strip()]
    want = [l["ids"] if l["hf_rust_agrees"] else l["ids_hf_rust"] for l in lines]
    same = sum(1 for a, b in zip(got, want) if a == b)
    ck.check("tokenize with a GGUF's own tokenizer: every golden line's ids", p.returncode == 0 and same == len(want),
             f"{same}/{len(want)} equal; {p.stderr[-300:]}")
    chats = [json.loads(l) for l in open(os.path.join(data, "chat_golden.jsonl"), encoding="utf-8") if l.strip()]
    chats = [c for c in chats if c["hf_rust_agrees"]]
    inp = "".join(json.dumps({"messages": c["messages"], "add_generation_prompt": c["add_generation_prompt"]}) + "\n"
                  for c in chats)
    p = subprocess.run([exe, "tokenize", "--tokenizer", path, "--jsonl", "--chat"], input=inp, capture_output=True,
                       text=True, timeout=300)
    got = [json.loads(l)["ids"] for l in p.stdout.splitlines() if l.strip()]
    same = sum(1 for g, c in zip(got, chats) if g == c["ids"])
    ck.check("chat with a GGUF's own tokenizer and chat template: the golden renderings' ids",
             p.returncode == 0 and same == len(chats), f"{same}/{len(chats)} equal; {p.stderr[-300:]}")
    # A GGUF with no tokenizer: one error that says what to do.
    bare = os.path.join(work, "bare.gguf")
    write_model(bare, [("token_embd.weight", np.zeros((2, 32), dtype=np.float32), None)], [])
    C.expect_error(ck, "tokenize with a GGUF that holds no tokenizer", [exe, "tokenize", "--tokenizer", bare],
                   "bare.gguf", "tokenizer.json")


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
    raw_types = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
    for qt in raw_types:
        cols = 64 if gguf.GGML_QUANT_SIZES[qt][0] == 32 else 512
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
    write_model(split, tensors, kv, split_max_tensors=6)
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
        ("an array of arrays", dict(tensors=[], data=b"", kv=[("nest", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 4, 0))]), ["'nest'", "array of arrays"]),
        ("a 64-byte tensor name", dict(tensors=[("w" * 64, F32, [8], 0)], data=d), ["name of 64 bytes"]),
        ("a byte count that overflows", dict(tensors=[("huge", F32, [1 << 31, 1 << 31], 0)], data=d), ["'huge'", "overflow"]),
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
    # ---- a deepseek2 model (small shapes), planned with the GGUF's real sizes ----
    ck.guard("plan a deepseek2 GGUF", lambda: plan_deepseek2(ck, exe, work, rng))

    # ---- the tokenizer stored in a GGUF ----
    ck.guard("tokenizer from a GGUF", lambda: tokenizer_from_gguf(ck, exe, work))

    C.expect_error(ck, "a tensor that is not there", [exe, "gguf", one, "--tensor", "nope", "--out", os.path.join(work, "x.npy")],
                   "nope")
    ck.finish()


if __name__ == "__main__":
    main()
