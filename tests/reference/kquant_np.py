"""Simple NumPy encoders for ggml's K-quant block formats (Q4_K, Q5_K, Q6_K), for tests only.

The `gguf` package (PyPI) decodes every K-quant but encodes none, so the tests that need K-quant
files (a deepseek2 GGUF with a Q4_K_M-like mix) encode here: plain min/max scales per sub-block,
not llama.cpp's error-minimising search. Only the block layout must be right, and the tests
check that by decoding each encoded tensor with gguf's own dequantisation (round-trip error
bounded by half a step). Layouts follow ggml's block_q4_K / block_q5_K / block_q6_K.
"""

import numpy as np

QK_K = 256


def _f16(v):
    return np.asarray(v, dtype=np.float32).astype(np.float16)


def _safe_div(a, b):
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape, dtype=np.float64), where=b != 0)


def _k4_scales(sc, m):
    """The 12 bytes holding 8 six-bit scales and mins (Q4_K, Q5_K): [nb, 8] each -> [nb, 12]."""
    sc = sc.astype(np.uint8)
    m = m.astype(np.uint8)
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    return out


def _affine(x, levels):
    """Q4_K/Q5_K's asymmetric sub-blocks of 32: codes in 0..levels, 6-bit scales and mins."""
    nb = x.shape[0]
    xs = x.reshape(nb, 8, 32).astype(np.float64)
    mn = np.minimum(xs.min(-1), 0.0)
    mx = xs.max(-1)
    step = (mx - mn) / levels
    d = _f16(step.max(-1) / 63)
    dmin = _f16((-mn).max(-1) / 63)
    d64, dmin64 = d.astype(np.float64)[:, None], dmin.astype(np.float64)[:, None]
    sc = np.clip(np.rint(_safe_div(step, d64)), 0, 63)
    m = np.clip(np.rint(_safe_div(-mn, dmin64)), 0, 63)
    # The decoder's own rounding: d * sc and dmin * m in fp32.
    eff_scale = (d.astype(np.float32)[:, None] * sc.astype(np.float32)).astype(np.float64)
    eff_min = (dmin.astype(np.float32)[:, None] * m.astype(np.float32)).astype(np.float64)
    q = np.clip(np.rint(_safe_div(xs + eff_min[:, :, None], eff_scale[:, :, None])), 0, levels).astype(np.uint8)
    return d, dmin, sc, m, q.reshape(nb, QK_K)


def _low_nibbles(q):
    """Codes [nb, 256] -> qs [nb, 128]: byte 32c + i = q[64c + i] | q[64c + 32 + i] << 4."""
    nb = q.shape[0]
    g = q.reshape(nb, 4, 2, 32) & 15
    return (g[:, :, 0, :] | (g[:, :, 1, :] << 4)).reshape(nb, 128).astype(np.uint8)


def encode_q4_k(x):
    x = np.asarray(x, dtype=np.float32).reshape(-1, QK_K)
    d, dmin, sc, m, q = _affine(x, 15)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), _k4_scales(sc, m),
                           _low_nibbles(q)], axis=1)


def encode_q5_k(x):
    x = np.asarray(x, dtype=np.float32).reshape(-1, QK_K)
    d, dmin, sc, m, q = _affine(x, 31)
    nb = q.shape[0]
    hi = (q.reshape(nb, 4, 2, 32) >> 4) & 1  # chunk j: bit 2j of qh[l] for q[64j + l], bit 2j+1 for q[64j + 32 + l]
    qh = np.zeros((nb, 32), dtype=np.uint8)
    for j in range(4):
        qh |= (hi[:, j, 0, :] << (2 * j)).astype(np.uint8)
        qh |= (hi[:, j, 1, :] << (2 * j + 1)).astype(np.uint8)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), _k4_scales(sc, m), qh,
                           _low_nibbles(q)], axis=1)


def encode_q6_k(x):
    x = np.asarray(x, dtype=np.float32).reshape(-1, QK_K)
    nb = x.shape[0]
    xs = x.reshape(nb, 16, 16).astype(np.float64)
    step = np.abs(xs).max(-1) / 31
    d = _f16(step.max(-1) / 127)
    sc = np.clip(np.rint(_safe_div(step, d.astype(np.float64)[:, None])), -128, 127)
    eff = (d.astype(np.float32)[:, None] * sc.astype(np.float32)).astype(np.float64)
    q = (np.clip(np.rint(_safe_div(xs, eff[:, :, None])), -32, 31) + 32).astype(np.uint8).reshape(nb, 2, 4, 32)
    # Half n, quarter k of 32 values: ql[64n + l] = q[n,0,l] | q[n,2,l] << 4, ql[64n + 32 + l] = q[n,1,l] | q[n,3,l] << 4,
    # qh[32n + l] = the four quarters' top two bits.
    ql = np.concatenate([(q[:, :, 0] & 15) | ((q[:, :, 2] & 15) << 4), (q[:, :, 1] & 15) | ((q[:, :, 3] & 15) << 4)],
                        axis=2).reshape(nb, 128)
    qh = ((q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6)).reshape(nb, 64)
    return np.concatenate([ql.astype(np.uint8), qh.astype(np.uint8), sc.astype(np.int8).view(np.uint8),
                           d.view(np.uint8).reshape(-1, 2)], axis=1)


ENCODERS = {"Q4_K": (encode_q4_k, 144), "Q5_K": (encode_q5_k, 176), "Q6_K": (encode_q6_k, 210)}


def encode(x, type_name):
    """x [rows, cols] (cols a multiple of 256) -> raw blocks [rows, cols / 256 * block bytes] (uint8)."""
    x = np.asarray(x, dtype=np.float32)
    rows, cols = x.shape
    if cols % QK_K:
        raise ValueError(f"{type_name}: rows of {cols} values are not whole blocks of {QK_K}")
    fn, size = ENCODERS[type_name]
    raw = fn(x.reshape(-1, QK_K))
    assert raw.shape[1] == size, (type_name, raw.shape)
    return raw.reshape(rows, cols // QK_K * size)
