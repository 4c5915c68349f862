#!/usr/bin/env python3
"""A DeepSeek V3 Hugging Face checkpoint -> a GGUF in llama.cpp's `deepseek2` layout, and back.

For tests and benchmarks only: it writes with the `gguf` package's GGUFWriter (PyPI) the way
llama.cpp's convert_hf_to_gguf.py lays a DeepSeek V3 model out (its names; ggml shapes, innermost
dimension first; kv_b_proj split per head into attn_k_b, transposed, and attn_v_b; the routed
experts stacked per layer into ffn_{gate,up,down}_exps; the MLA-era metadata keys), then
quantises each tensor to the type `types` picks: F32, F16, BF16 and Q8_0 through gguf's own
quantisers, Q4_K, Q5_K and Q6_K through kquant_np (gguf decodes K-quants but encodes none).

`dequantized_checkpoint` goes the other way through gguf's GGUFReader and its NumPy
dequantisation, so a test can run the very weights a GGUF holds through an independent engine.

CLI (a benchmark's GGUF):  hf_to_gguf.py --model DIR --out FILE.gguf --mix q4_k_m|q8_0|f32
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kquant_np  # noqa: E402
from safetensors_np import Checkpoint  # noqa: E402

import gguf  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402


def mix_q8_0(name, shape):
    """Q8_0 for every matrix whose rows are whole blocks of 32; F32 vectors and the router."""
    if len(shape) == 1 or "ffn_gate_inp" in name or shape[-1] % 32:
        return Q.F32
    return Q.Q8_0


def mix_q4_k_m(name, shape, layer=None):
    """A Q4_K_M-like mix (llama.cpp's recipe in spirit): Q4_K for most matrices, Q6_K for the
    output, attn_v_b and every other layer's ffn_down(_exps), Q8_0 where rows are not whole
    K-quant blocks (attn_k_b's 128-wide rows in V3), F32 vectors and the router."""
    if len(shape) == 1 or "ffn_gate_inp" in name:
        return Q.F32
    if shape[-1] % 256:
        return Q.Q8_0 if shape[-1] % 32 == 0 else Q.F32
    if name == "output.weight" or "attn_v_b" in name:
        return Q.Q6_K
    if "ffn_down" in name and layer is not None and layer % 2 == 0:
        return Q.Q6_K
    return Q.Q4_K


def all_f32(name, shape):
    return Q.F32


def mix_bf16(name, shape):
    """BF16 matrices, F32 vectors and router: what llama-quantize starts from."""
    return Q.F32 if len(shape) == 1 or "ffn_gate_inp" in name else Q.BF16


def quantize(arr, qtype):
    """arr [..., cols] float -> what GGUFWriter.add_tensor takes for qtype (raw blocks for quantised types)."""
    a = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == Q.F32:
        return a
    if qtype == Q.F16:
        return a.astype(np.float16)
    if qtype in (Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.TQ1_0):  # gguf's own quantisers
        return gguf.quants.quantize(a, qtype)
    rows = a.reshape(-1, a.shape[-1])
    # In slices of about 4M values: the encoder works in float64 with a dozen temporaries, which
    # for a real-shape embedding (129280 x 7168) at once would need ~80 GB.
    step = max(1, (1 << 22) // rows.shape[1])
    raw = np.concatenate([kquant_np.encode(rows[i:i + step], qtype.name) for i in range(0, rows.shape[0], step)])
    return raw.reshape(a.shape[:-1] + (raw.shape[-1],))


def layer_of(name):
    if name.startswith("blk."):
        return int(name.split(".")[1])
    return None


class Stacked:
    """Experts' matrices to be stacked, read one by one."""

    def __init__(self, ck, names):
        self.ck, self.names = ck, names
        self.shape = (len(names),) + tuple(ck.shape(names[0]))

    def __iter__(self):
        return (self.ck.tensor(n) for n in self.names)


def gguf_tensors(ck, cfg, split_kv_b=True):
    """(name, NumPy shape, read) in llama.cpp's order and layout; read() gives the float array
    (NumPy order: ggml's shape reversed), or a Stacked for the routed experts."""
    H = cfg["num_attention_heads"]
    nope, v, R = cfg["qk_nope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]

    def plain(hf):
        return tuple(ck.shape(hf)), lambda: ck.tensor(hf)

    def kv_b_part(a, part):
        def read():
            per_head = ck.tensor(a + "kv_b_proj.weight").reshape(H, nope + v, R)
            if part == "k":
                return np.ascontiguousarray(per_head[:, :nope, :].transpose(0, 2, 1))  # [H, R, nope]
            return np.ascontiguousarray(per_head[:, nope:, :])  # [H, v, R]
        return ((H, R, nope) if part == "k" else (H, v, R)), read

    yield ("token_embd.weight",) + plain("model.embed_tokens.weight")
    for L in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{L}.", f"blk.{L}."
        a = p + "self_attn."
        yield (b + "attn_norm.weight",) + plain(p + "input_layernorm.weight")
        yield (b + "attn_q_a.weight",) + plain(a + "q_a_proj.weight")
        yield (b + "attn_q_a_norm.weight",) + plain(a + "q_a_layernorm.weight")
        yield (b + "attn_q_b.weight",) + plain(a + "q_b_proj.weight")
        yield (b + "attn_kv_a_mqa.weight",) + plain(a + "kv_a_proj_with_mqa.weight")
        yield (b + "attn_kv_a_norm.weight",) + plain(a + "kv_a_layernorm.weight")
        if split_kv_b:
            yield (b + "attn_k_b.weight",) + kv_b_part(a, "k")
            yield (b + "attn_v_b.weight",) + kv_b_part(a, "v")
        else:
            yield (b + "attn_kv_b.weight",) + plain(a + "kv_b_proj.weight")
        yield (b + "attn_output.weight",) + plain(a + "o_proj.weight")
        yield (b + "ffn_norm.weight",) + plain(p + "post_attention_layernorm.weight")
        m = p + "mlp."
        if L < cfg["first_k_dense_replace"]:
            for part in ("gate", "up", "down"):
                yield (b + f"ffn_{part}.weight",) + plain(m + f"{part}_proj.weight")
            continue
        yield (b + "ffn_gate_inp.weight",) + plain(m + "gate.weight")
        yield (b + "exp_probs_b.bias",) + plain(m + "gate.e_score_correction_bias")
        for part in ("gate", "up", "down"):  # stacked [E, rows, cols], one expert at a time (real sizes are GBs)
            st = Stacked(ck, [m + f"experts.{e}.{part}_proj.weight" for e in range(cfg["n_routed_experts"])])
            yield b + f"ffn_{part}_exps.weight", st.shape, (lambda st=st: st)
        if cfg.get("n_shared_experts", 0) > 0:
            for part in ("gate", "up", "down"):
                yield (b + f"ffn_{part}_shexp.weight",) + plain(m + f"shared_experts.{part}_proj.weight")
    yield ("output_norm.weight",) + plain("model.norm.weight")
    yield ("output.weight",) + plain("lm_head.weight")


def metadata(cfg):
    """The deepseek2 keys llama.cpp's converter writes for a V3 model (MLA-era layout)."""
    kv = [
        ("deepseek2.block_count", cfg["num_hidden_layers"]),
        ("deepseek2.context_length", cfg["max_position_embeddings"]),
        ("deepseek2.embedding_length", cfg["hidden_size"]),
        ("deepseek2.feed_forward_length", cfg["intermediate_size"]),
        ("deepseek2.attention.head_count", cfg["num_attention_heads"]),
        ("deepseek2.attention.head_count_kv", 1),
        ("deepseek2.rope.freq_base", float(cfg["rope_theta"])),
        ("deepseek2.attention.layer_norm_rms_epsilon", float(cfg["rms_norm_eps"])),
        ("deepseek2.expert_used_count", cfg["num_experts_per_tok"]),
        ("deepseek2.leading_dense_block_count", cfg["first_k_dense_replace"]),
        ("deepseek2.vocab_size", cfg["vocab_size"]),
        ("deepseek2.attention.q_lora_rank", cfg["q_lora_rank"]),
        ("deepseek2.attention.kv_lora_rank", cfg["kv_lora_rank"]),
        ("deepseek2.attention.key_length", cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]),
        ("deepseek2.attention.value_length", cfg["kv_lora_rank"]),
        ("deepseek2.attention.key_length_mla", cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]),
        ("deepseek2.attention.value_length_mla", cfg["v_head_dim"]),
        ("deepseek2.expert_feed_forward_length", cfg["moe_intermediate_size"]),
        ("deepseek2.expert_count", cfg["n_routed_experts"]),
        ("deepseek2.expert_shared_count", cfg["n_shared_experts"]),
        ("deepseek2.expert_weights_scale", float(cfg["routed_scaling_factor"])),
        ("deepseek2.expert_weights_norm", bool(cfg["norm_topk_prob"])),
        ("deepseek2.expert_gating_func", 2),
        ("deepseek2.expert_group_count", cfg["n_group"]),
        ("deepseek2.expert_group_used_count", cfg["topk_group"]),
        ("deepseek2.rope.dimension_count", cfg["qk_rope_head_dim"]),
        ("tokenizer.ggml.bos_token_id", cfg.get("bos_token_id", 0)),
        ("tokenizer.ggml.eos_token_id", cfg.get("eos_token_id", 1)),
    ]
    rs = cfg.get("rope_scaling") or {}
    if rs.get("type") == "yarn":
        kv += [("deepseek2.rope.scaling.type", "yarn"),
               ("deepseek2.rope.scaling.factor", float(rs["factor"])),
               ("deepseek2.rope.scaling.original_context_length", rs["original_max_position_embeddings"]),
               ("deepseek2.rope.scaling.yarn_log_multiplier", 0.1 * float(rs["mscale_all_dim"]))]
    return kv


def add_kv(w, kv):
    """Metadata (key, value) pairs, typed as llama.cpp's converter types them: bool, uint32,
    float32, string, or an array."""
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


def add_tokenizer(w, tokenizer_dir, vocab_size=None):
    """DeepSeek V3's tokenizer (tokenizer.json + tokenizer_config.json in tokenizer_dir) as
    llama.cpp's converter stores it: tokens in id order, added tokens typed control or
    user-defined, the merges, pre-tokenizer 'deepseek-v3', BOS/EOS and the chat template."""
    with open(os.path.join(tokenizer_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    with open(os.path.join(tokenizer_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        tc = json.load(f)
    n = max(max(tj["model"]["vocab"].values()), max(a["id"] for a in tj["added_tokens"])) + 1
    tokens, types = [""] * n, [int(gguf.TokenType.NORMAL)] * n
    for s_, i in tj["model"]["vocab"].items():
        tokens[i] = s_
    for a in tj["added_tokens"]:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = int(gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED)
    # Padded to the model's vocabulary with unused tokens, as llama.cpp's converter does (llama.cpp
    # sizes the embedding by the token list).
    for i in range(n, vocab_size or n):
        tokens.append(f"[PAD{i}]")
        types.append(int(gguf.TokenType.UNUSED))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("deepseek-v3")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(tj["model"]["merges"])
    w.add_add_bos_token(True)
    w.add_chat_template(tc["chat_template"])


def write_gguf(model_dir, out_path, types=mix_q8_0, split_max_tensors=0, split_kv_b=True, extra_kv=(), drop=(),
               tokenizer_dir=None, progress=False):
    """Writes the GGUF; returns {name: ggml type} of what it wrote. `drop`: names left out (for error
    tests); `tokenizer_dir`: store that tokenizer in the file (add_tokenizer)."""
    ck = Checkpoint(model_dir)
    cfg = ck.config
    w = gguf.GGUFWriter(out_path, "deepseek2", split_max_tensors=split_max_tensors)
    w.add_name("moetier test model")
    if tokenizer_dir:
        add_tokenizer(w, tokenizer_dir, cfg["vocab_size"])
    add_kv(w, list(metadata(cfg)) + list(extra_kv))
    plan = []  # (name, NumPy shape, read, type)
    for name, shape, read in gguf_tensors(ck, cfg, split_kv_b):
        if name in drop:
            continue
        try:
            qt = types(name, shape, layer_of(name))
        except TypeError:
            qt = types(name, shape)
        plan.append((name, shape, read, qt))

    def encoded(read, qt):
        arr = read()
        if isinstance(arr, Stacked):
            return np.stack([quantize(e, qt) for e in arr])
        return quantize(arr, qt)

    if split_max_tensors:  # gguf's writer splits only what it holds in memory: small models
        for name, shape, read, qt in plan:
            w.add_tensor(name, encoded(read, qt), raw_dtype=None if qt in (Q.F32, Q.F16) else qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=progress)
    else:  # streamed: the tensor table first, then each tensor encoded and written in turn
        for name, shape, read, qt in plan:
            block, size = gguf.GGML_QUANT_SIZES[qt]
            if qt in (Q.F32, Q.F16):
                w.add_tensor_info(name, shape, np.dtype(np.float32 if qt == Q.F32 else np.float16),
                                  int(np.prod(shape)) * size)
            else:
                byte_shape = tuple(shape[:-1]) + (shape[-1] // block * size,)
                w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for name, shape, read, qt in plan:
            w.write_tensor_data(np.ascontiguousarray(encoded(read, qt)))
            if progress:
                print(f"  {name} {list(shape)} {qt.name}", file=sys.stderr, flush=True)
    w.close()
    written = {name: qt for name, shape, read, qt in plan}
    return written


def dequantized_checkpoint(gguf_paths, cfg, out_dir, write_checkpoint):
    """The GGUF's weights as gguf's reader and NumPy dequantisation see them, written as an F32
    Hugging Face checkpoint (config `cfg` without FP8 quantisation) by `write_checkpoint(dir, cfg, tensors)`.
    kv_b is rejoined from attn_k_b / attn_v_b (or taken from attn_kv_b); experts unstacked."""
    values = {}
    for path in gguf_paths:
        r = gguf.GGUFReader(path)
        for t in r.tensors:
            shape = [int(d) for d in reversed(t.shape.tolist())]  # ggml -> NumPy order
            values[t.name] = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape).astype(np.float32)
    H, nope, v = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
    T = {"model.embed_tokens.weight": ("F32", values["token_embd.weight"]),
         "model.norm.weight": ("F32", values["output_norm.weight"]),
         "lm_head.weight": ("F32", values["output.weight"])}
    for L in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{L}.", f"blk.{L}."
        a = p + "self_attn."
        names = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
                 "self_attn.q_a_proj.weight": "attn_q_a.weight", "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
                 "self_attn.q_b_proj.weight": "attn_q_b.weight",
                 "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
                 "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight", "self_attn.o_proj.weight": "attn_output.weight"}
        for hf, gg in names.items():
            T[p + hf] = ("F32", values[b + gg])
        if b + "attn_kv_b.weight" in values:
            T[a + "kv_b_proj.weight"] = ("F32", values[b + "attn_kv_b.weight"])
        else:
            k_b = values[b + "attn_k_b.weight"].transpose(0, 2, 1)  # [H, nope, R]
            v_b = values[b + "attn_v_b.weight"]  # [H, v, R]
            T[a + "kv_b_proj.weight"] = ("F32", np.concatenate([k_b, v_b], axis=1).reshape(H * (nope + v), -1))
        m = p + "mlp."
        if L < cfg["first_k_dense_replace"]:
            for part in ("gate", "up", "down"):
                T[m + f"{part}_proj.weight"] = ("F32", values[b + f"ffn_{part}.weight"])
            continue
        T[m + "gate.weight"] = ("F32", values[b + "ffn_gate_inp.weight"])
        T[m + "gate.e_score_correction_bias"] = ("F32", values[b + "exp_probs_b.bias"])
        for part in ("gate", "up", "down"):
            stacked = values[b + f"ffn_{part}_exps.weight"]
            for e in range(cfg["n_routed_experts"]):
                T[m + f"experts.{e}.{part}_proj.weight"] = ("F32", stacked[e])
        if cfg.get("n_shared_experts", 0) > 0:
            for part in ("gate", "up", "down"):
                T[m + f"shared_experts.{part}_proj.weight"] = ("F32", values[b + f"ffn_{part}_shexp.weight"])
    out_cfg = dict(cfg)
    out_cfg.pop("quantization_config", None)
    out_cfg["num_nextn_predict_layers"] = 0
    write_checkpoint(out_dir, out_cfg, T)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    ap.add_argument("--out", required=True, help="output .gguf")
    ap.add_argument("--mix", default="q4_k_m", choices=["q4_k_m", "q8_0", "bf16", "f32"])
    ap.add_argument("--tokenizer", help="store this tokenizer directory's tokenizer in the file")
    a = ap.parse_args()
    types = {"q4_k_m": mix_q4_k_m, "q8_0": mix_q8_0, "bf16": mix_bf16, "f32": all_f32}[a.mix]
    tmp = a.out + ".partial"
    written = write_gguf(a.model, tmp, types, tokenizer_dir=a.tokenizer, progress=True)
    os.replace(tmp, a.out)
    by_type = {}
    for qt in written.values():
        by_type[qt.name] = by_type.get(qt.name, 0) + 1
    print(f"wrote {a.out}: {len(written)} tensors, {json.dumps(by_type)}")


if __name__ == "__main__":
    main()
