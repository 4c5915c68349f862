"""Shared helpers for the moetier end-to-end scripts (no pytest).

Each script is run as  python3 SCRIPT --moetier PATH_TO_BINARY --workdir DIR , prints one line per
check and a final line "<n> passed, <m> failed", and exits non-zero on any failure.
"""

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REF_DIR = os.path.join(os.path.dirname(HERE), "reference")
sys.path.insert(0, REF_DIR)

import deepseek_ref  # noqa: E402
import safetensors_np  # noqa: E402


# ------------------------------------------------------------------------------------------------
# Arguments and check bookkeeping
# ------------------------------------------------------------------------------------------------
def parse_args(need_binary=True):
    ap = argparse.ArgumentParser()
    ap.add_argument("--moetier", required=need_binary, help="path to the moetier binary")
    ap.add_argument("--workdir", required=True, help="scratch directory (created, reused)")
    ap.add_argument("--keep", action="store_true", help="keep generated checkpoints")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    return a


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.t0 = time.time()

    def check(self, name, ok, detail=""):
        ok = bool(ok)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        return ok

    def info(self, msg):
        print(f"INFO {msg}", flush=True)

    def guard(self, name, fn):
        """Runs fn(); an exception counts as one failed check named `name`."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            self.check(name, False, f"exception: {type(e).__name__}: {e}")
            return None

    def finish(self):
        print(f"INFO elapsed {time.time() - self.t0:.1f}s", flush=True)
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(0 if self.failed == 0 and self.passed > 0 else 1)


# ------------------------------------------------------------------------------------------------
# Running the C++ CLI
# ------------------------------------------------------------------------------------------------
def run_cli(binary, args, timeout=600):
    cmd = [binary] + [str(a) for a in args]
    t = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout[-3000:]}\n"
                           f"stderr:\n{p.stderr[-3000:]}")
    print(f"INFO ran {' '.join(cmd)} ({time.time() - t:.1f}s)", flush=True)
    return p


CRASH_SIGNS = ("Traceback", "terminate called", "Segmentation", "Aborted", "AddressSanitizer")


def error_problems(p, needles=(), whole_stderr=False):
    """What is wrong with a finished run that should have failed with one clear error: the exit
    code (1..127), exactly one `error:` line, no crash signs, every needle in that line (or
    anywhere in stderr, for multi-line explanations). Returns (problems, the error line)."""
    errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    problems = []
    if p.returncode <= 0 or p.returncode >= 128:
        problems.append(f"exit code {p.returncode}")
    if len(errors) != 1:
        problems.append(f"{len(errors)} 'error:' lines")
    problems += [f"stderr shows '{b}'" for b in CRASH_SIGNS if b in p.stderr]
    where = p.stderr if whole_stderr else (errors[0] if errors else "")
    problems += [f"message lacks '{n}'" for n in needles if n not in where]
    return problems, errors[0] if errors else ""


def expect_error(ck, name, argv, *needles, whole_stderr=False, timeout=300):
    """Runs argv and checks it fails with one clear error (see error_problems)."""
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    problems, msg = error_problems(p, needles, whole_stderr)
    ck.check(name, not problems, msg[:300] if not problems else "; ".join(problems) + " | stderr: " + p.stderr.strip()[-400:])


def make_model(binary, out_dir, arch="v3", seed=None, layers=None, experts=None, dtype=None, shard_mb=None,
               preset="tiny"):
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    args = ["make-model", "--preset", preset, "--arch", arch, "--out", out_dir]
    for flag, val in (("--seed", seed), ("--layers", layers), ("--experts", experts), ("--dtype", dtype),
                      ("--shard-mb", shard_mb)):
        if val is not None:
            args += [flag, val]
    run_cli(binary, args)
    return load_config(out_dir)


def engine_logits(binary, model_dir, ids, out_path, chunk=None, extra=(), with_stderr=False):
    """`moetier logits` of ids (float64 [n, vocab]); extra: more flags (--plan, --backend, ...).
    with_stderr: return (logits, the run's stderr)."""
    args = ["logits", "--model", model_dir, "--ids", ",".join(str(int(i)) for i in ids), "--out", out_path]
    if chunk is not None:
        args += ["--chunk", chunk]
    args += list(extra)
    p = run_cli(binary, args)
    a = np.load(out_path)
    if a.shape[0] != len(ids):
        raise RuntimeError(f"{out_path}: shape {a.shape}, expected {len(ids)} rows")
    return (a.astype(np.float64), p.stderr) if with_stderr else a.astype(np.float64)


def cpu_flags():
    """This CPU's feature flags (/proc/cpuinfo): "avx2", "avx512_vnni", ..."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def random_ids(n, seed, hi=128000):
    return [int(x) for x in np.random.default_rng(seed).integers(0, hi, size=n)]


def selection_margin(diag):
    """Smallest margin of any discrete choice in a reference forward pass: indexer top-k boundary
    (relative to the largest |score| of that query) and router expert / group boundaries (absolute)."""
    m = np.inf
    for e in diag.get("indexer", []):
        m = min(m, e["min_rel_gap"])
    for r in diag.get("routing", []):
        m = min(m, r["expert_gap"], r["group_gap"])
    return m


def pick_ids(model_dir, n, seed, min_margin=1e-4, tries=25, opts=None):
    """Random ids (seeded) for which no discrete choice of the reference (indexer top-k, router top-k,
    group top-k) is a near-tie: the spec leaves tie order open (and ReLU makes exact-zero index scores
    common), so a tie would make the comparison depend on tie-breaking rather than on the math.
    Deterministic: tries seed, seed+1, ... Returns (ids, ref_logits, diag, seed_used)."""
    best = None
    for k in range(tries):
        ids = random_ids(n, seed + k)
        ref, diag = deepseek_ref.run(model_dir, ids, opts)
        m = selection_margin(diag)
        if best is None or m > best[0]:
            best = (m, ids, ref, diag, seed + k)
        if m >= min_margin:
            break
    m, ids, ref, diag, used = best
    print(f"INFO ids seed {used}: smallest selection margin {m:.3e}"
          + ("" if m >= min_margin else f" (below {min_margin:g} for all {tries} seeds; using the best)"), flush=True)
    return ids, ref, diag, used


# ------------------------------------------------------------------------------------------------
# Comparisons
# ------------------------------------------------------------------------------------------------
def cosine_rows(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return np.sum(a * b, axis=-1) / np.maximum(na * nb, 1e-300)


def argmax_agreement(ref, eng, tie_frac=1e-3):
    """Positions where the argmaxes differ, excluding genuine near-ties: a mismatch is forgiven only when
    the engine's pick has a reference logit within tie_frac * std(ref row) of the reference maximum.
    Returns (n_mismatch, n_forgiven)."""
    ra, ea = np.argmax(ref, axis=-1), np.argmax(eng, axis=-1)
    bad, forgiven = 0, 0
    for i in np.nonzero(ra != ea)[0]:
        if ref[i, ra[i]] - ref[i, ea[i]] <= tie_frac * np.std(ref[i]):
            forgiven += 1
        else:
            bad += 1
    return bad, forgiven


def compare_logits(ck, name, ref, eng, cos_min=0.999):
    """Every position: cosine > cos_min and the same argmax.  Returns the per-row cosines."""
    ok_shape = ck.check(f"{name}: shape", ref.shape == eng.shape, f"ref {ref.shape} engine {eng.shape}")
    if not ok_shape:
        return None
    ck.check(f"{name}: finite", np.all(np.isfinite(eng)), "")
    cos = cosine_rows(ref, eng)
    worst = int(np.argmin(cos))
    ck.check(f"{name}: cosine > {cos_min} at every position", np.all(cos > cos_min),
             f"min {cos.min():.7f} (1-cos {1 - cos.min():.1e}) at position {worst}; "
             f"max |diff| / std(ref) {np.max(np.abs(ref - eng)) / np.std(ref):.1e}")
    bad, forgiven = argmax_agreement(ref, eng)
    # Strict: the test ids are chosen with clear routing/selection margins, so no tie is excused.
    ck.check(f"{name}: identical argmax at every position", bad + forgiven == 0,
             f"{bad} mismatches of {ref.shape[0]}" + (f" ({forgiven} exact near-ties forgiven)" if forgiven else ""))
    return cos


def check_not_degenerate(ck, name, a, min_std=1e-3):
    std = np.std(a, axis=-1)
    ck.check(f"{name}: logits not constant (std over vocab > {min_std} at every position)", np.all(std > min_std),
             f"min std {std.min():.4g}")
    am = np.argmax(a, axis=-1)
    ck.check(f"{name}: argmax varies across positions", len(set(am.tolist())) >= 2,
             f"{len(set(am.tolist()))} distinct argmax over {len(am)} positions")
    if a.shape[0] >= 2:
        ck.check(f"{name}: rows differ across positions", np.max(np.abs(a[1:] - a[:-1])) > min_std, "")


def check_power(ck, name, wrong_ref, eng, cos_min=0.999):
    """A deliberately wrong reference must fail the cosine/argmax check on at least one position."""
    cos = cosine_rows(wrong_ref, eng)
    bad, _ = argmax_agreement(wrong_ref, eng)
    ck.check(f"{name}: perturbed reference would fail the check", np.any(cos <= cos_min) or bad > 0,
             f"min cosine {cos.min():.6f}, {int(np.sum(cos <= cos_min))} positions <= {cos_min}, "
             f"{bad} argmax mismatches")


# ------------------------------------------------------------------------------------------------
# A tiny NumPy checkpoint writer (used to self-test the reference without the C++ binary)
# ------------------------------------------------------------------------------------------------
_E4M3_POS = safetensors_np.FP8_E4M3_TABLE[:0x7F]  # codes 0x00..0x7E: finite, strictly increasing


def encode_e4m3(x):
    """float -> float8_e4m3fn code, round to nearest even, saturating at 448 (writer only)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.minimum(np.abs(x), 448.0)
    hi = np.clip(np.searchsorted(_E4M3_POS, a, side="left"), 0, 0x7E)
    lo = np.maximum(hi - 1, 0)
    dlo, dhi = a - _E4M3_POS[lo], _E4M3_POS[hi] - a
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    return np.where(np.signbit(x), code | 0x80, code).astype(np.uint8)


def encode_bf16(x):
    """float -> bf16 bits, round to nearest even (writer only)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


_ST_NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


def tensor_bytes(dtype, arr):
    arr = np.asarray(arr)
    if dtype == "BF16":
        return encode_bf16(arr).astype("<u2").tobytes()
    if dtype == "F8_E4M3":
        return (arr if arr.dtype == np.uint8 else encode_e4m3(arr)).tobytes()
    return arr.astype(_ST_NP[dtype]).tobytes()


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (dtype, array)}; arrays are converted (BF16/F8 values are rounded)."""
    header, blobs, off = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        b = tensor_bytes(dtype, arr)
        header[name] = {"dtype": dtype, "shape": list(np.shape(arr)), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    hj = json.dumps(header).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def write_checkpoint(out_dir, config, tensors, n_shards=1):
    """Writes config.json and either model.safetensors (n_shards == 0) or n shards plus the index."""
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    names = list(tensors.keys())
    if n_shards == 0:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, {"format": "pt"})
        return
    wmap = {}
    for s in range(n_shards):
        fname = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {n: tensors[n] for i, n in enumerate(names) if i % n_shards == s}
        write_safetensors(os.path.join(out_dir, fname), part)
        wmap.update({n: fname for n in part})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wmap}, f, indent=1)


def tiny_config(arch="v3", vocab=512, block=16, index_topk=5):
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM" if arch == "v3" else "DeepseekV32ForCausalLM"],
        "model_type": "deepseek_v3" if arch == "v3" else "deepseek_v32",
        "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 48, "moe_intermediate_size": 16,
        "num_hidden_layers": 3, "first_k_dense_replace": 1, "moe_layer_freq": 1,
        "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2,
        "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "topk_method": "noaux_tc", "norm_topk_prob": True,
        "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
        "num_attention_heads": 4, "num_key_value_heads": 4, "hidden_act": "silu", "attention_bias": False,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 163840,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
        "num_nextn_predict_layers": 1, "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
        "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                "weight_block_size": [block, block]},
    }
    if arch == "v3.2":
        cfg.update({"index_n_heads": 4, "index_head_dim": 16, "index_topk": index_topk})
    return cfg


def tiny_tensors(cfg, seed=0, wdtype="F8_E4M3", pow2_scales=True, extra_mtp_layer=True):
    """Random weights for tiny_config.  Linear weights are stored as `wdtype` (F8_E4M3 with block scales,
    BF16 or F32).  With pow2_scales the FP8 values times their scales are exact in BF16 and F32, so the
    same seed gives bit-identical dequantized weights in all three storage types."""
    rng = np.random.default_rng(seed)
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    dn, dr, dv = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    rq, rkv = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    blk = (cfg.get("quantization_config") or {}).get("weight_block_size") or [128, 128]
    T = {}

    def linear(name, n, k, std=None):
        std = std if std is not None else 1.0 / math.sqrt(k)
        w = rng.standard_normal((n, k)) * std
        nb0, nb1 = -(-n // blk[0]), -(-k // blk[1])
        amax = np.zeros((nb0, nb1))
        for i in range(nb0):
            for j in range(nb1):
                amax[i, j] = np.max(np.abs(w[i * blk[0]:(i + 1) * blk[0], j * blk[1]:(j + 1) * blk[1]]))
        s = amax / 448.0
        if pow2_scales:
            s = 2.0 ** np.ceil(np.log2(s))
        s = s.astype(np.float32).astype(np.float64)
        full = np.repeat(np.repeat(s, blk[0], 0), blk[1], 1)[:n, :k]
        codes = encode_e4m3(w / full)
        if wdtype == "F8_E4M3":
            T[name] = ("F8_E4M3", codes)
            T[name + "_scale_inv"] = ("F32", s)
        else:
            T[name] = (wdtype, safetensors_np.FP8_E4M3_TABLE[codes] * full)

    def norm(name, n):
        T[name] = ("BF16", 1.0 + 0.1 * rng.standard_normal(n))

    T["model.embed_tokens.weight"] = ("BF16", rng.standard_normal((cfg["vocab_size"], D)))
    n_layers = cfg["num_hidden_layers"] + 1  # the last one stands for an MTP layer (dropped below if unwanted)
    for L in range(n_layers):
        p = f"model.layers.{L}."
        norm(p + "input_layernorm.weight", D)
        norm(p + "post_attention_layernorm.weight", D)
        a = p + "self_attn."
        linear(a + "q_a_proj.weight", rq, D)
        norm(a + "q_a_layernorm.weight", rq)
        linear(a + "q_b_proj.weight", H * (dn + dr), rq)
        linear(a + "kv_a_proj_with_mqa.weight", rkv + dr, D)
        norm(a + "kv_a_layernorm.weight", rkv)
        linear(a + "kv_b_proj.weight", H * (dn + dv), rkv)
        linear(a + "o_proj.weight", D, H * dv)
        if "index_topk" in cfg:
            ip = a + "indexer."
            nh, dh = cfg["index_n_heads"], cfg["index_head_dim"]
            linear(ip + "wq_b.weight", nh * dh, rq)
            linear(ip + "wk.weight", dh, D)
            T[ip + "k_norm.weight"] = ("F32", 1.0 + 0.1 * rng.standard_normal(dh))
            T[ip + "k_norm.bias"] = ("F32", 0.1 * rng.standard_normal(dh))
            T[ip + "weights_proj.weight"] = ("BF16", rng.standard_normal((nh, D)) / math.sqrt(D))
        m = p + "mlp."
        if L < cfg["first_k_dense_replace"]:
            for nm, (n, k) in (("gate_proj", (cfg["intermediate_size"], D)), ("up_proj", (cfg["intermediate_size"], D)),
                               ("down_proj", (D, cfg["intermediate_size"]))):
                linear(m + nm + ".weight", n, k)
        else:
            E, I = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
            T[m + "gate.weight"] = ("BF16", rng.standard_normal((E, D)) / math.sqrt(D) * 3)
            T[m + "gate.e_score_correction_bias"] = ("F32", 0.05 * rng.standard_normal(E))
            for e in range(E):
                for nm, (n, k) in (("gate_proj", (I, D)), ("up_proj", (I, D)), ("down_proj", (D, I))):
                    linear(m + f"experts.{e}.{nm}.weight", n, k)
            Is = I * cfg["n_shared_experts"]
            for nm, (n, k) in (("gate_proj", (Is, D)), ("up_proj", (Is, D)), ("down_proj", (D, Is))):
                linear(m + f"shared_experts.{nm}.weight", n, k)
        if L >= cfg["num_hidden_layers"]:  # MTP extras; the reference must ignore the whole layer
            norm(p + "enorm.weight", D)
            norm(p + "hnorm.weight", D)
            T[p + "eh_proj.weight"] = ("BF16", rng.standard_normal((D, 2 * D)))
    norm("model.norm.weight", D)
    T["lm_head.weight"] = ("BF16", rng.standard_normal((cfg["vocab_size"], D)) / math.sqrt(D) * 4)
    if not extra_mtp_layer:
        mtp = f"model.layers.{cfg['num_hidden_layers']}."
        T = {k: v for k, v in T.items() if not k.startswith(mtp)}
    return T
