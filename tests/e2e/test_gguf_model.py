"""A DeepSeek V3 GGUF run end to end: moetier's logits from the GGUF's own block formats against
the independent float64 NumPy reference (tests/reference/deepseek_ref.py) on the same weights.

A tiny V3 checkpoint (hidden 256 so that K-quant rows are whole blocks; the full vocabulary so
that the file's own tokenizer runs) is written in llama.cpp's `deepseek2` layout by the `gguf`
package's writer (tests/reference/hf_to_gguf.py: llama.cpp's names, kv_b split into attn_k_b
(transposed) and attn_v_b, experts stacked per layer), with every type moetier runs: Q4_K, Q5_K,
Q6_K, Q8_0, F16, BF16, F32. The reference reads that file back through gguf's GGUFReader and NumPy
dequantisation, so moetier's reader, decoders, kv_b rejoin, expert slicing and GEMV are all
checked against code that shares nothing with them.

- reference backend: GGUF logits equal those of the dequantised F32 checkpoint (same decoded
  weights, same arithmetic) to fp32 rounding;
- fast CPU backend, prefill and token-by-token decode (the GGUF GEMV): equal to the NumPy
  reference on the dequantised weights; and within the quantisation's error of the original
  unquantised checkpoint; a reference with kv_b rejoined wrongly fails the same check;
- a split GGUF and an old-layout file (attn_kv_b kept whole) give the same logits;
- `generate` runs from the GGUF alone with the tokenizer it stores;
- types without a kernel, missing tensors, truncated files, --gpu on and --plan: one clear error.
"""

import os
import re
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_common as C  # noqa: E402

try:
    import gguf  # noqa: E402
    from gguf import GGMLQuantizationType as Q  # noqa: E402
    import hf_to_gguf  # noqa: E402
except ImportError:  # a missing reference is a failure, not a skip
    print("FAIL import gguf: run scripts/setup.sh --tests (installs the gguf package into .venv)")
    print("0 passed, 1 failed")
    sys.exit(1)

TOKENIZER = os.path.join(os.path.dirname(C.HERE), "..", "data", "tokenizer-deepseek-v3")


def config():
    cfg = C.tiny_config(vocab=129280)
    cfg.update({"hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 256, "q_lora_rank": 64,
                "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32,
                "num_attention_heads": 4, "num_key_value_heads": 4, "n_routed_experts": 16,
                "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "num_nextn_predict_layers": 0})
    cfg.pop("quantization_config")
    return cfg


def mix(name, shape, layer=None):
    """Every type moetier runs, spread over the model (a Q4_K_M-like core)."""
    if len(shape) == 1 or "ffn_gate_inp" in name:
        return Q.F32
    table = {"token_embd": Q.Q4_K, "attn_q_a.": Q.Q5_K, "attn_q_b": Q.Q8_0,
             "attn_kv_a_mqa": Q.Q4_K, "attn_k_b": Q.Q5_0, "attn_v_b": Q.F16, "attn_kv_b": Q.Q4_1, "attn_output": Q.Q8_0,
             "ffn_gate.": Q.Q4_K, "ffn_up.": Q.Q4_K, "ffn_down.": Q.Q6_K, "ffn_gate_exps": Q.Q4_K,
             "ffn_up_exps": Q.Q4_K, "ffn_gate_shexp": Q.BF16, "ffn_up_shexp": Q.Q4_0, "ffn_down_shexp": Q.Q5_1}
    if name == "output.weight":
        return Q.Q6_K
    if "ffn_down_exps" in name:
        return Q.Q6_K if layer % 2 else Q.Q5_K
    for key, qt in table.items():
        if key in name:
            return qt
    raise KeyError(name)


def compare_int8(ck, name, ref, eng, cos_min=0.999):
    """The block GEMV's 8-bit activations move logits by a little (a max |diff| of a few percent of
    their spread): cosine > cos_min everywhere, and the same argmax wherever the reference's top
    token leads its runner-up by more than twice that row's max |diff| (at least a quarter of the rows)."""
    cos = C.cosine_rows(ref, eng)
    ck.check(f"{name}: cosine > {cos_min} at every position", np.all(cos > cos_min), f"min {cos.min():.6f}")
    top2 = np.sort(ref, axis=-1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    err = np.max(np.abs(ref - eng), axis=-1)
    clear = margin > 2 * err
    same = np.argmax(ref, axis=-1) == np.argmax(eng, axis=-1)
    ck.check(f"{name}: identical argmax where the reference's lead exceeds twice the error (>= 1/4 of positions)",
             np.all(same[clear]) and clear.sum() * 4 >= len(clear),
             f"{int(clear.sum())}/{len(clear)} clear positions, {int((~same[clear]).sum())} mismatches among them, "
             f"{int((~same).sum())} overall")


def wrong_kv_b_reference(deq_dir, cfg, work):
    """The dequantised checkpoint with each head's W_UK rows taken from attn_k_b without the
    transpose (a plausible rejoin bug): must fail the comparison."""
    from safetensors_np import Checkpoint
    ck = Checkpoint(deq_dir)
    H, nope, v, R = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]
    T = {n: ("F32", ck.tensor(n)) for n in ck.names()}
    for L in range(cfg["num_hidden_layers"]):
        name = f"model.layers.{L}.self_attn.kv_b_proj.weight"
        w = T[name][1].reshape(H, nope + v, R).copy()
        k_t = w[:, :nope, :].transpose(0, 2, 1).reshape(H, nope, R)  # the transposed bytes read as [nope, R]
        w[:, :nope, :] = k_t
        T[name] = ("F32", w.reshape(H * (nope + v), R))
    out = os.path.join(work, "wrong-kvb")
    C.write_checkpoint(out, dict(ck.config), T, n_shards=0)
    return out


def main():
    a = C.parse_args()
    ck = C.Checker()
    exe, work = a.moetier, a.workdir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cfg = config()

    # The original checkpoint (F32), its GGUF, and what the GGUF holds as gguf-py decodes it.
    orig = os.path.join(work, "orig")
    C.write_checkpoint(orig, cfg, C.tiny_tensors(cfg, seed=5, wdtype="F32", extra_mtp_layer=False), n_shards=0)
    model = os.path.join(work, "model.gguf")
    written = hf_to_gguf.write_gguf(orig, model, mix, tokenizer_dir=TOKENIZER)
    used = sorted({qt.name for qt in written.values()})
    ck.check("the test GGUF holds every type moetier runs but Q2_K/Q3_K",
             set(used) >= {"Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0", "Q5_0", "Q5_1", "F16", "BF16", "F32"}, ", ".join(used))
    deq = os.path.join(work, "dequantized")
    hf_to_gguf.dequantized_checkpoint([model], cfg, deq, lambda d, c, t: C.write_checkpoint(d, c, t, n_shards=0))
    ids, ref, _, _ = C.pick_ids(deq, 12, seed=11)
    C.check_not_degenerate(ck, "numpy reference on the GGUF's weights", ref)

    # 1. Reference backend: the GGUF's blocks decoded in place equal the dequantised checkpoint.
    out = lambda tag: os.path.join(work, tag + ".npy")  # noqa: E731
    g_ref = C.engine_logits(exe, model, ids, out("gguf-reference"), extra=["--backend", "reference"])
    d_ref = C.engine_logits(exe, deq, ids, out("deq-reference"), extra=["--backend", "reference"])
    diff = np.max(np.abs(g_ref - d_ref)) / np.std(d_ref)
    ck.check("reference backend: GGUF logits = the dequantised checkpoint's (max |diff| / std <= 1e-6)", diff <= 1e-6,
             f"{diff:.2e}")
    C.compare_logits(ck, "reference backend, GGUF vs numpy reference", ref, g_ref, cos_min=0.99999)

    # 2. The fast CPU backend: prefill (oneDNN over decoded slabs) and decode (the block GEMV).
    g_cpu = C.engine_logits(exe, model, ids, out("gguf-cpu"))
    compare_int8(ck, "cpu backend prefill (the block GEMV up to 32 tokens), GGUF vs numpy reference", ref, g_cpu)
    g_dec = C.engine_logits(exe, model, ids, out("gguf-decode"), chunk=1, extra=["--gguf-tiles", "off"])
    compare_int8(ck, "cpu backend decode (GGUF block GEMV), GGUF vs numpy reference", ref, g_dec)
    # Row tiles (the default on AVX2 and AVX-512; elsewhere the flag changes nothing): the same integer
    # sums, so the same logits up to fp32 rounding of the scaled block sums.
    t_dec, t_err = C.engine_logits(exe, model, ids, out("gguf-decode-tiles"), chunk=1, extra=["--gguf-tiles", "on"],
                                   with_stderr=True)
    tiled_re = r"(\d+) K-quant and Q8_0 matrices as row tiles"
    n_tiled = None
    if "avx512_vnni" in C.cpu_flags():
        # Every K-quant and Q8_0 matrix the graph multiplies by is tiled: Q4_K, Q5_K, Q6_K and Q8_0 here.
        m = re.search(tiled_re, t_err)
        n_tiled = int(m.group(1)) if m else None
        ck.check("... the Q4_K, Q5_K, Q6_K and Q8_0 matrices were tiled (AVX-512 CPU)", m is not None and int(m.group(1)) >= 4,
                 m.group(0) if m else t_err.strip()[-300:])
    compare_int8(ck, "cpu backend decode (K-quants and Q8_0 as row tiles), GGUF vs numpy reference", ref, t_dec)
    tdiff = np.max(np.abs(t_dec - g_dec)) / np.std(g_dec)
    ck.check("... and row tiles = blocks to fp32 rounding (max |diff| / std <= 1e-5)", tdiff <= 1e-5, f"{tdiff:.3g}")
    for isa in ("avx2", "scalar"):
        g_isa, isa_err = C.engine_logits(exe, model, ids[:6], out("gguf-" + isa), chunk=1, extra=["--isa", isa],
                                         with_stderr=True)
        compare_int8(ck, f"cpu backend decode at --isa {isa}", ref[:6], g_isa)
        if isa == "avx2" and "avx2" in C.cpu_flags():
            # AVX2 has tile kernels for every tiled type: the same matrices as at AVX-512 are tiled.
            m = re.search(tiled_re, isa_err)
            ck.check("... at --isa avx2 the Q4_K, Q5_K, Q6_K and Q8_0 matrices were tiled",
                     m is not None and int(m.group(1)) >= 4 and (n_tiled is None or int(m.group(1)) == n_tiled),
                     (m.group(0) if m else isa_err.strip()[-300:]) + f" (all types at AVX-512: {n_tiled})")
            b_isa = C.engine_logits(exe, model, ids[:6], out("gguf-avx2-blocks"), chunk=1,
                                    extra=["--isa", "avx2", "--gguf-tiles", "off"])
            adiff = np.max(np.abs(g_isa - b_isa)) / np.std(b_isa)
            ck.check("... and AVX2 tiles = AVX2 blocks to fp32 rounding (max |diff| / std <= 1e-5)", adiff <= 1e-5,
                     f"{adiff:.3g}")
    # A 40-token prompt in one chunk (past the 32 tokens up to which prompts used to stay on the
    # GEMV): tiles and blocks run their GEMVs 4 tokens a pass at any count, so the prompt gives
    # what the same ids decoded one at a time give (that path's 8-bit activations), to fp32
    # rounding. (Against the fp32 reference, 8-bit activations flip a few near-tied expert
    # choices over 40 positions, in decode as in prefill; the scalar level, decoded slabs past 32
    # tokens, matches the reference.)
    ids40, ref40, _, _ = C.pick_ids(deq, 40, seed=31)
    for tag, extra in (("row tiles", []), ("blocks", ["--gguf-tiles", "off"])):
        key = tag.replace(" ", "-")
        prompt = C.engine_logits(exe, model, ids40, out("gguf-prompt40-" + key), extra=extra)
        steps = C.engine_logits(exe, model, ids40, out("gguf-steps40-" + key), chunk="1", extra=extra)
        sdiff = np.max(np.abs(prompt - steps)) / np.std(steps)
        ck.check(f"a 40-token prompt ({tag}) = the same ids decoded one at a time (max |diff| / std <= 1e-4)",
                 sdiff <= 1e-4, f"{sdiff:.3g}")
    compare_int8(ck, "a 40-token prompt at --isa scalar, GGUF vs numpy reference", ref40,
                 C.engine_logits(exe, model, ids40, out("gguf-prompt40-scalar"), extra=["--isa", "scalar"]))

    wrong = wrong_kv_b_reference(deq, cfg, work)
    C.check_power(ck, "kv_b rejoined without the transpose", C.deepseek_ref.logits(wrong, ids), g_cpu, cos_min=0.9999)

    # 3. Within the quantisation's error of the unquantised model.
    ref_orig = C.deepseek_ref.logits(orig, ids)
    cos_q = C.cosine_rows(ref_orig, g_cpu)
    cos_deq = C.cosine_rows(ref_orig, ref)
    ck.info(f"cosine to the unquantised model's logits: GGUF in moetier {cos_q.min():.5f}, its weights in the "
            f"numpy reference {cos_deq.min():.5f} (a tiny random model amplifies quantisation noise)")
    ck.check("GGUF logits within the quantisation's error of the original model: as close to it as the "
             "dequantised weights themselves, give or take the 8-bit activations (|diff of cosines| < 1e-2)",
             np.max(np.abs(cos_q - cos_deq)) < 1e-2, f"{np.max(np.abs(cos_q - cos_deq)):.2e}")

    # 4. A split model (from its second part) and the old layout with attn_kv_b whole.
    split = os.path.join(work, "split", "model.gguf")
    os.makedirs(os.path.dirname(split))
    hf_to_gguf.write_gguf(orig, split, mix, split_max_tensors=25)
    parts = sorted(f for f in os.listdir(os.path.dirname(split)) if f.endswith(".gguf"))
    ck.check("the split model has several parts", len(parts) >= 3, ", ".join(parts))
    g_split = C.engine_logits(exe, os.path.join(os.path.dirname(split), parts[1]), ids, out("gguf-split"))
    ck.check("split GGUF (opened from part 2): the same logits as one file", np.array_equal(g_split, g_cpu),
             f"max |diff| {np.max(np.abs(g_split - g_cpu)):.2e}")
    old = os.path.join(work, "old-layout.gguf")
    hf_to_gguf.write_gguf(orig, old, mix, split_kv_b=False)
    deq_old = os.path.join(work, "dequantized-old")
    hf_to_gguf.dequantized_checkpoint([old], cfg, deq_old, lambda d, c, t: C.write_checkpoint(d, c, t, n_shards=0))
    ref_old = C.deepseek_ref.logits(deq_old, ids)
    C.compare_logits(ck, "old layout (attn_kv_b), reference backend vs numpy reference", ref_old,
                     C.engine_logits(exe, old, ids, out("gguf-old"), extra=["--backend", "reference"]), cos_min=0.99999)
    # The cpu backend's decode takes attn_kv_b (Q4_1 here) through attention's general row decoder
    # (it crashed when the stored-row decoder was given GGUF blocks). Its 8-bit activations flip a
    # router choice at some positions of this random model, so the bound is on the median position
    # and a floor for every one; kv_b bytes decoded as another format fail both.
    cos_old = C.cosine_rows(ref_old, C.engine_logits(exe, old, ids, out("gguf-old-cpu"), chunk=1))
    ck.check("old layout (attn_kv_b), cpu backend decode vs numpy reference: cosine > 0.9 everywhere, median > 0.999",
             cos_old.min() > 0.9 and np.median(cos_old) > 0.999, f"min {cos_old.min():.5f} median {np.median(cos_old):.6f}")

    # 5. convert FILE.gguf STORE keeps the blocks' bytes (the experts' tile-form matrices as row
    #    tiles by default, --gguf-tiles off as the file's blocks): the store computes what the
    #    GGUF does, also when its experts stream from disk through a small RAM cache.
    import json
    store_blocks = os.path.join(work, "store-blocks")
    p = C.run_cli(exe, ["convert", model, store_blocks, "--gguf-tiles", "off"])
    ck.check("convert a GGUF into a packed store, experts as blocks (--gguf-tiles off)", p.returncode == 0,
             (p.stdout + p.stderr)[-300:])
    with open(os.path.join(store_blocks, "manifest.json")) as f:
        man_blocks = json.load(f)
    ck.check("... its manifest does not say tiles", "ggml_tiles" not in man_blocks["experts"], str(man_blocks["experts"])[:200])
    b_dec = C.engine_logits(exe, store_blocks, ids, out("store-blocks-decode"), chunk=1)
    diff = np.max(np.abs(b_dec - g_dec)) / np.std(g_dec)
    ck.check("cpu decode: that store's logits = the GGUF's as blocks (the same blocks through the same GEMV)", diff == 0,
             f"max |diff| / std {diff:.2e}")
    store = os.path.join(work, "store")
    p = C.run_cli(exe, ["convert", model, store])
    ck.check("convert a GGUF into a packed store (experts as row tiles)", p.returncode == 0, (p.stdout + p.stderr)[-300:])
    with open(os.path.join(store, "manifest.json")) as f:
        man = json.load(f)
    ck.check("... its manifest says so (format version 3, experts.ggml_tiles)",
             man["version"] == 3 and man["experts"].get("ggml_tiles") is True, f"{man['version']} {str(man['experts'])[:200]}")
    # The tiled store's blobs hold other bytes than the blocks store's (the same codes, scales and
    # mins, rearranged): layer 1 expert 0's gate (Q4_K), which starts each blob.
    def blob_head(st, m, n):
        b = next(b for b in m["blobs"] if b["layer"] == 1 and b["expert"] == 0)
        with open(os.path.join(st, m["files"][b["file"]]), "rb") as f:
            f.seek(b["offset"])
            return f.read(n)
    gate_bytes = man["experts"]["inter"] * man["experts"]["hidden"] // 256 * 144
    tiled_head, blocks_head = blob_head(store, man, gate_bytes), blob_head(store_blocks, man_blocks, gate_bytes)
    # A Q4_K tile starts with the fp16 d of its 16 rows' first blocks, in row order (ggml_tiles.h).
    row_bytes = man["experts"]["hidden"] // 256 * 144
    first_ds = b"".join(blocks_head[r * row_bytes:r * row_bytes + 2] for r in range(16))
    ck.check("... and its blobs hold the gate as tiles: other bytes than the blocks store's, beginning with the 16 "
             "rows' block-0 d values in row order", tiled_head != blocks_head and tiled_head[:32] == first_ds,
             f"{tiled_head[:8].hex()} vs {first_ds[:8].hex()}")
    types = {row[0]: row[1:] for row in man["experts"]["ggml_types"]}
    want = {1: [int(Q.Q4_K), int(Q.Q4_K), int(Q.Q6_K)], 2: [int(Q.Q4_K), int(Q.Q4_K), int(Q.Q5_K)]}
    # Its dense matrices that the graph multiplies (lm_head Q6_K, q_a Q5_K, o Q8_0, layer 0's
    # FFN) are row tiles too where their type has a tile form; the embedding and kv_b (read by
    # rows) and the blocks store's are not.
    tiled = {t["name"] for t in man["dense"]["tensors"] if t.get("ggml_tiles")}
    must = {"lm_head.weight", "model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.self_attn.o_proj.weight",
            "model.layers.0.mlp.down_proj.weight"}
    ck.check("... and its dense matmul weights as tiles, not the embedding or kv_b",
             must <= tiled and not any("embed_tokens" in n or "kv_b_proj" in n for n in tiled) and
             not any(t.get("ggml_tiles") for t in man_blocks["dense"]["tensors"]), f"{sorted(tiled)[:6]}")
    ck.check("the store keeps each layer's expert block types", man["experts"]["quant"] == "gguf" and types == want,
             f"{man['experts']['quant']} {types}")
    dense_types = {t["name"]: t.get("ggml_type") for t in man["dense"]["tensors"] if t["dtype"] == "GGUF"}
    ck.check("... and the other weights' blocks (lm_head Q6_K, q_a Q5_K)",
             dense_types.get("lm_head.weight") == int(Q.Q6_K) and
             dense_types.get("model.layers.0.self_attn.q_a_proj.weight") == int(Q.Q5_K), str(dense_types)[:200])
    blob_total = sum(b["bytes"] for b in man["blobs"])
    exps = sum(os.path.getsize(os.path.join(store, f)) for f in man["files"])
    ck.check("blob files hold the experts' blocks (no re-encoding to a bigger format)", exps == blob_total and
             blob_total <= 1.02 * sum(1 for _ in man["blobs"]) * man["experts"]["blob_bytes"], f"{exps} bytes")
    s_dec = C.engine_logits(exe, store, ids, out("store-decode"), chunk=1)
    diff = np.max(np.abs(s_dec - g_dec)) / np.std(g_dec)
    ck.check("cpu decode: the tiled store's logits = the GGUF's to fp32 rounding (tiles and blocks are the same "
             "8-bit products; max |diff| / std <= 1e-5)", diff <= 1e-5, f"max |diff| / std {diff:.2e}")
    tdiff = np.max(np.abs(s_dec - t_dec)) / np.std(t_dec)
    ck.check("... and = the GGUF run as tiles (the same tiles through the same kernels) to fp32 rounding",
             tdiff <= 1e-5, f"max |diff| / std {tdiff:.2e}")
    for isa in ("avx2", "scalar"):  # the tile kernels at AVX2; at the scalar level the tiles go back to blocks
        s_isa, s_err = C.engine_logits(exe, store, ids[:6], out("store-decode-" + isa), chunk=1, extra=["--isa", isa],
                                       with_stderr=True)
        if isa == "scalar":
            m = re.search(r"(\d+) of the store's row-tile matrices back to blocks", s_err)
            ck.check("... at --isa scalar the store's dense tiles go back to blocks once, at load", m is not None and
                     int(m.group(1)) >= 4, s_err.strip()[-300:])
        b_isa = C.engine_logits(exe, store_blocks, ids[:6], out("store-blocks-decode-" + isa), chunk=1, extra=["--isa", isa])
        diff = np.max(np.abs(s_isa - b_isa)) / np.std(b_isa)
        ck.check(f"... at --isa {isa}: tiled store = blocks store " + ("exactly" if isa == "scalar" else "to fp32 rounding"),
                 diff == 0 if isa == "scalar" else diff <= 1e-5, f"max |diff| / std {diff:.2e}")
    s_stream = C.engine_logits(exe, store, ids, out("store-stream"), chunk=1, extra=["--ram-budget", "3M"])
    diff = np.max(np.abs(s_stream - s_dec)) / np.std(s_dec)
    # Streamed experts are summed in arrival order: fp32 rounding only.
    ck.check("... and with its experts streamed from disk through a 3 MB cache (max |diff| / std <= 1e-5)",
             diff <= 1e-5, f"{diff:.2e}")
    p = C.run_cli(exe, ["generate", "--model", store, "--prompt", "The capital of France is", "-n", "5"])
    g = C.run_cli(exe, ["generate", "--model", model, "--prompt", "The capital of France is", "-n", "5"])
    ck.check("generate from the store with the GGUF's tokenizer (tokenizer.gguf): the GGUF's text",
             p.returncode == 0 and os.path.exists(os.path.join(store, "tokenizer.gguf")) and
             p.stdout.strip() == g.stdout.strip() and len(p.stdout.strip()) > len("The capital of France is"),
             f"store: {p.stdout.strip()[-80:]!r} gguf: {g.stdout.strip()[-80:]!r} {p.stderr[-200:]}")
    compare_int8(ck, "store prefill (experts through the tile GEMV) vs numpy reference", ref,
                 C.engine_logits(exe, store, ids, out("store-prefill")))

    # plan --model STORE: the tiled store's experts at their block types' tile rates, mixed by time
    # over the types' bytes (from the manifest's types and the expert shape, computed here); the
    # blocks store at the assumed 0.85 of RAM bandwidth, said so.
    prof = os.path.join(work, "profile.json")
    C.run_cli(exe, ["profile", "--quick", "--out", prof])
    with open(prof) as f:
        pj = json.load(f)
    pj["cpu"]["isa"]["avx2"] = True  # the planner logic, whatever this CPU
    rates = {"Q4_K": 40.0, "Q5_K": 20.0, "Q6_K": 10.0}
    pj["kernels"] = [k for k in pj["kernels"] if k["format"] in ("q4", "q8", "bf16")]
    pj["kernels"] += [{"format": t, "decode_gbs": g, "prefill_gflops": 100.0} for t, g in rates.items()]
    with open(prof, "w") as f:
        json.dump(pj, f)
    sizes = {int(Q.Q4_K): (144, "Q4_K"), int(Q.Q5_K): (176, "Q5_K"), int(Q.Q6_K): (210, "Q6_K")}
    hid, inter, n_exp = man["experts"]["hidden"], man["experts"]["inter"], cfg["n_routed_experts"]
    by_type = {}
    for _, gt, up, dn in man["experts"]["ggml_types"]:
        for t, rows, cols in ((gt, inter, hid), (up, inter, hid), (dn, hid, inter)):
            name = sizes[t][1]
            by_type[name] = by_type.get(name, 0) + n_exp * rows * cols // 256 * sizes[t][0]
    want = sum(by_type.values()) / sum(b / rates[t] for t, b in by_type.items())
    p = C.run_cli(exe, ["plan", "--model", store, "--profile", prof, "--no-gpu"])
    m = re.search(r"CPU decode rates of the experts' row tiles by block type: Q4_K 40\.0, Q5_K 20\.0, Q6_K 10\.0 GB/s "
                  r"-> ([0-9.]+) GB/s \(([0-9.]+) GB/s of the store's", p.stdout)
    ck.check("plan --model STORE (row tiles): the experts at their block types' tile rates, mixed by time",
             m is not None and abs(float(m.group(1)) - want) <= 0.051, f"want {want:.2f}: {(p.stdout + p.stderr)[:900]}")
    # The rates count blocks; a blob (tiles, padding) takes its blocks' time, so the plan's rate
    # per blob byte is the mix scaled by blob bytes over the mean expert's block bytes.
    blob_want = want * man["experts"]["blob_bytes"] / (sum(by_type.values()) / (len(man["experts"]["ggml_types"]) * n_exp))
    ck.check("... and an expert's blob (tiles and padding) costs its blocks' time",
             m is not None and abs(float(m.group(2)) - blob_want) <= 0.051 and blob_want > want,
             f"want {blob_want:.2f}: {(p.stdout + p.stderr)[:900]}")
    p = C.run_cli(exe, ["plan", "--model", store_blocks, "--profile", prof, "--no-gpu"])
    ck.check("plan --model STORE (blocks): not at the tile rates, and says why",
             "the experts are GGUF blocks (converted with --gguf-tiles off" in p.stdout and "row tiles by block type" not in p.stdout,
             (p.stdout + p.stderr)[:900])

    bad_store = os.path.join(work, "bad-store")
    shutil.copytree(store, bad_store)
    man["experts"]["ggml_types"][0][3] = int(Q.IQ2_XXS)
    with open(os.path.join(bad_store, "manifest.json"), "w") as f:
        json.dump(man, f)
    C.expect_error(ck, "a store whose manifest names expert blocks without a kernel",
                   [exe, "logits", "--model", bad_store, "--ids", "1,2", "--out", out("x")], "IQ2_XXS", "layer 1")

    # 6. generate from the GGUF alone: its own tokenizer (no tokenizer.json beside it).
    p = C.run_cli(exe, ["generate", "--model", model, "--prompt", "The capital of France is", "-n", "5"])
    ck.check("generate from a GGUF with the tokenizer it stores", p.returncode == 0 and "tokens/s" in (p.stdout + p.stderr),
             (p.stdout + p.stderr)[-300:])

    # bench decode runs on the threads it is given (it used to take --threads and ignore it).
    bj = os.path.join(work, "bench-decode.json")
    p = C.run_cli(exe, ["bench", "decode", "--model", model, "--threads", "1", "-n", "2", "--prompt-tokens", "2", "--json", bj])
    threads = json.load(open(bj)).get("threads") if p.returncode == 0 and os.path.exists(bj) else None
    ck.check("bench decode --threads 1 runs on one thread", threads == 1 and "1 threads" in p.stdout,
             f"json threads {threads}: {(p.stdout + p.stderr)[-400:]}")

    # 7. Bad input: one clear error each.
    tq = os.path.join(work, "tq1_0.gguf")
    hf_to_gguf.write_gguf(orig, tq, lambda n, s, l=None: Q.TQ1_0 if "ffn_up_exps" in n else mix(n, s, l))
    C.expect_error(ck, "a type without a kernel is refused by name, with its tensors",
                   [exe, "logits", "--model", tq, "--ids", "1,2", "--out", out("x")], "TQ1_0", "blk.1.ffn_up_exps.weight")
    missing = os.path.join(work, "missing.gguf")
    hf_to_gguf.write_gguf(orig, missing, mix, drop=("blk.2.ffn_down_exps.weight",))
    C.expect_error(ck, "a missing tensor is named", [exe, "logits", "--model", missing, "--ids", "1,2", "--out", out("x")],
                   "blk.2.ffn_down_exps.weight")
    trunc = os.path.join(work, "truncated.gguf")
    with open(model, "rb") as f, open(trunc, "wb") as g:
        g.write(f.read(os.path.getsize(model) - 1000))
    C.expect_error(ck, "a truncated download", [exe, "logits", "--model", trunc, "--ids", "1,2", "--out", out("x")],
                   "truncated.gguf")
    C.expect_error(ck, "convert --gguf-tiles with a bad value", [exe, "convert", model, os.path.join(work, "x-store"),
                   "--gguf-tiles", "yes"], "--gguf-tiles", "on or off")
    C.expect_error(ck, "convert --gguf-tiles for a checkpoint (not a GGUF)",
                   [exe, "convert", deq_old, os.path.join(work, "x-store"), "--gguf-tiles", "on"], "--gguf-tiles", "GGUF file only")
    C.expect_error(ck, "bench gguf --tile-prefetch: a distance that is not a multiple of 64",
                   [exe, "bench", "gguf", "--tile-prefetch", "auto,4096:100", "--runs", "1"], "--tile-prefetch 4096:100",
                   "multiples of 64")
    C.expect_error(ck, "--gpu on with a GGUF", [exe, "generate", "--model", model, "--prompt", "hi", "--gpu", "on"],
                   "GGUF")
    C.expect_error(ck, "--plan with a GGUF", [exe, "generate", "--model", model, "--prompt", "hi", "--plan", "auto"],
                   "GGUF")
    ck.finish()


if __name__ == "__main__":
    main()
