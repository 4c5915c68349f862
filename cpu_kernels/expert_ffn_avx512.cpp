// AVX-512 GEMV kernels on the packed expert layout (expert_ffn_internal.h): one 64-byte chunk is
// one zmm, one row of the 16-row tile per 32-bit lane, so every instruction works on 16 rows
// against activation values broadcast from memory.
//   Q4:   vpdpbusd(codes 0..15 as u8, x as s8): the lanes sum code * x exactly in int32; the
//         group's offset 8 * sum(x) is subtracted before the fp32 scale (d_w * d_x).
//   Q8:   vpdpbusd(q + 128 as u8, x as s8), offset 128 * sum(x).
//   BF16: vdpbf16ps(bf16 pairs, broadcast bf16 pair of x).
// Compiled with -mavx512f/bw/vl/dq/vnni/bf16 -mfma -mf16c; entered only after the CPU check.
// GCC 12 flags its own _mm512_undefined_* helpers inside the intrinsic headers (GCC PR105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "cpu_kernels/expert_ffn_internal.h"

namespace mt::cpu::expert_detail {

namespace {

constexpr int kPrefetch = 2048;  // bytes ahead in the tile stream

inline __m512i bcast4(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

inline void prefetch(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }

// Software prefetch kPrefetch bytes ahead, never past the end of the run of tiles being processed
// (the next run is usually elsewhere), plus a burst over the first kPrefetch bytes of a run.
// On AMD CPUs the q4 and q8 kernels go without: on Zen 4 their decode read 13% (q4) and 9% (q8)
// faster on the hardware prefetchers alone, in every one of 8 and 6 paired rounds; bf16 was even
// (docs/benchmarks.md). Off is a run whose end is its start: neither the burst nor ahead() fires.
struct Run {
  const uint8_t* end = nullptr;
  // The run of tiles [start, end) of a bf16 kernel (which keeps its prefetch everywhere) or not,
  // its first kPrefetch bytes prefetched where it prefetches at all.
  static Run open(const uint8_t* start, const uint8_t* end, bool bf16) {
    const Run r{bf16 || !cpu_is_amd() ? end : start};
    for (const uint8_t* q = start; q < r.end && q < start + kPrefetch; q += 64) prefetch(q);
    return r;
  }
  void ahead(const uint8_t* p) const {
    if (p + kPrefetch < end) prefetch(p + kPrefetch);
  }
};

template <int NT>
void q4_tile(const uint8_t* tc, const uint16_t* ts, const Run& run, const PackedMat& m, const Act& a, int64_t tok0,
             float* out, int64_t ld) {
  const int64_t G = m.groups(), cpg = m.group / 8, K = a.K;
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const int8_t* xq[NT];
  for (int t = 0; t < NT; ++t) xq[t] = a.q + a.row(tok0 + t) * K;
  __m512 facc[NT];
  for (int t = 0; t < NT; ++t) facc[t] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512i ia[NT], ib[NT];
    for (int t = 0; t < NT; ++t) ia[t] = ib[t] = _mm512_setzero_si512();
    const uint8_t* gc = tc + g * cpg * kChunkBytes;
    const int64_t kg = g * m.group;
    for (int64_t c = 0; c < cpg; ++c) {
      const uint8_t* p = gc + c * kChunkBytes;
      run.ahead(p);
      const __m512i v = _mm512_loadu_si512(p);
      const __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
      const int64_t k = kg + c * 8;
      for (int t = 0; t < NT; ++t) {
        ia[t] = _mm512_dpbusd_epi32(ia[t], lo, bcast4(xq[t] + k));
        ib[t] = _mm512_dpbusd_epi32(ib[t], hi, bcast4(xq[t] + k + 4));
      }
    }
    const __m512 sw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ts + g * kRowTile)));
    for (int t = 0; t < NT; ++t) {
      const __m512 dx = _mm512_set1_ps(a.d[a.row(tok0 + t) * G + g]);
      const __m512i off = _mm512_set1_epi32(a.off[a.row(tok0 + t) * G + g]);
      const __m512i s = _mm512_sub_epi32(_mm512_add_epi32(ia[t], ib[t]), off);
      facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(sw, dx), facc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + t * ld, facc[t]);
}

template <int NT>
void q8_tile(const uint8_t* tc, const float* ts, const Run& run, const PackedMat& m, const Act& a, int64_t tok0,
             float* out, int64_t ld) {
  const int64_t G = m.groups(), cpg = m.group / 4, K = a.K;  // cpg is even (group % 8 == 0)
  const int8_t* xq[NT];
  for (int t = 0; t < NT; ++t) xq[t] = a.q + a.row(tok0 + t) * K;
  __m512 facc[NT];
  for (int t = 0; t < NT; ++t) facc[t] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512i ia[NT], ib[NT];
    for (int t = 0; t < NT; ++t) ia[t] = ib[t] = _mm512_setzero_si512();
    const uint8_t* gc = tc + g * cpg * kChunkBytes;
    const int64_t kg = g * m.group;
    for (int64_t c = 0; c < cpg; c += 2) {
      const uint8_t* p = gc + c * kChunkBytes;
      run.ahead(p);
      run.ahead(p + kChunkBytes);
      const __m512i v0 = _mm512_loadu_si512(p), v1 = _mm512_loadu_si512(p + kChunkBytes);
      const int64_t k = kg + c * 4;
      for (int t = 0; t < NT; ++t) {
        ia[t] = _mm512_dpbusd_epi32(ia[t], v0, bcast4(xq[t] + k));
        ib[t] = _mm512_dpbusd_epi32(ib[t], v1, bcast4(xq[t] + k + 4));
      }
    }
    const __m512 sw = _mm512_loadu_ps(ts + g * kRowTile);
    for (int t = 0; t < NT; ++t) {
      const __m512 dx = _mm512_set1_ps(a.d[a.row(tok0 + t) * G + g]);
      const __m512i off = _mm512_set1_epi32(a.off[a.row(tok0 + t) * G + g]);
      const __m512i s = _mm512_sub_epi32(_mm512_add_epi32(ia[t], ib[t]), off);
      facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(sw, dx), facc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + t * ld, facc[t]);
}

template <int NT>
void bf16_tile(const uint8_t* tc, const Run& run, const PackedMat& m, const Act& a, int64_t tok0, float* out,
               int64_t ld) {
  constexpr int U = NT == 1 ? 4 : 2;  // independent accumulation chains per token
  const int64_t K = a.K, nc = K / 2;     // nc is a multiple of 4
  (void)m;
  const uint16_t* xb[NT];
  for (int t = 0; t < NT; ++t) xb[t] = a.b + a.row(tok0 + t) * K;
  __m512 acc[NT][U];
  for (int t = 0; t < NT; ++t)
    for (int u = 0; u < U; ++u) acc[t][u] = _mm512_setzero_ps();
  for (int64_t c = 0; c < nc; c += U) {
    for (int u = 0; u < U; ++u) {
      const uint8_t* p = tc + (c + u) * kChunkBytes;
      run.ahead(p);
      const __m512i v = _mm512_loadu_si512(p);
      const int64_t k = 2 * (c + u);
      for (int t = 0; t < NT; ++t)
        acc[t][u] = _mm512_dpbf16_ps(acc[t][u], (__m512bh)v, (__m512bh)bcast4(xb[t] + k));
    }
  }
  for (int t = 0; t < NT; ++t) {
    __m512 s = acc[t][0];
    for (int u = 1; u < U; ++u) s = _mm512_add_ps(s, acc[t][u]);
    _mm512_storeu_ps(out + t * ld, s);
  }
}

// ---- two matrices in lockstep, one token each (two DRAM streams; see expert_ffn_internal.h) ----

struct PairArgs {
  const uint8_t* tc[2];
  const uint8_t* ts[2];
  const Run* run[2];
  const int8_t* xq[2];
  const float* d[2];
  const int32_t* off[2];
  const uint16_t* xb[2];
  float* out[2];
};

void q4_pair_tile(const PairArgs& p, const PackedMat& m) {
  const int64_t G = m.groups(), cpg = m.group / 8;
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  __m512 f[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t g = 0; g < G; ++g) {
    __m512i ia[2], ib[2];
    ia[0] = ib[0] = ia[1] = ib[1] = _mm512_setzero_si512();
    const int64_t kg = g * m.group;
    for (int64_t c = 0; c < cpg; ++c) {
#pragma GCC unroll 2
      for (int j = 0; j < 2; ++j) {
        const uint8_t* q = p.tc[j] + (g * cpg + c) * kChunkBytes;
        p.run[j]->ahead(q);
        const __m512i v = _mm512_loadu_si512(q);
        const int64_t k = kg + c * 8;
        ia[j] = _mm512_dpbusd_epi32(ia[j], _mm512_and_si512(v, m4), bcast4(p.xq[j] + k));
        ib[j] = _mm512_dpbusd_epi32(ib[j], _mm512_and_si512(_mm512_srli_epi16(v, 4), m4), bcast4(p.xq[j] + k + 4));
      }
    }
#pragma GCC unroll 2
    for (int j = 0; j < 2; ++j) {
      const auto* sh = reinterpret_cast<const __m256i*>(p.ts[j] + g * kRowTile * 2);
      const __m512 sw = _mm512_cvtph_ps(_mm256_loadu_si256(sh));
      const __m512i s = _mm512_sub_epi32(_mm512_add_epi32(ia[j], ib[j]), _mm512_set1_epi32(p.off[j][g]));
      f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(sw, _mm512_set1_ps(p.d[j][g])), f[j]);
    }
  }
  _mm512_storeu_ps(p.out[0], f[0]);
  _mm512_storeu_ps(p.out[1], f[1]);
}

void q8_pair_tile(const PairArgs& p, const PackedMat& m) {
  const int64_t G = m.groups(), cpg = m.group / 4;  // even
  __m512 f[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t g = 0; g < G; ++g) {
    __m512i ia[2], ib[2];
    ia[0] = ib[0] = ia[1] = ib[1] = _mm512_setzero_si512();
    const int64_t kg = g * m.group;
    for (int64_t c = 0; c < cpg; c += 2) {
#pragma GCC unroll 2
      for (int j = 0; j < 2; ++j) {
        const uint8_t* q = p.tc[j] + (g * cpg + c) * kChunkBytes;
        p.run[j]->ahead(q);
        p.run[j]->ahead(q + kChunkBytes);
        const int64_t k = kg + c * 4;
        ia[j] = _mm512_dpbusd_epi32(ia[j], _mm512_loadu_si512(q), bcast4(p.xq[j] + k));
        ib[j] = _mm512_dpbusd_epi32(ib[j], _mm512_loadu_si512(q + kChunkBytes), bcast4(p.xq[j] + k + 4));
      }
    }
#pragma GCC unroll 2
    for (int j = 0; j < 2; ++j) {
      const __m512 sw = _mm512_loadu_ps(reinterpret_cast<const float*>(p.ts[j]) + g * kRowTile);
      const __m512i s = _mm512_sub_epi32(_mm512_add_epi32(ia[j], ib[j]), _mm512_set1_epi32(p.off[j][g]));
      f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(sw, _mm512_set1_ps(p.d[j][g])), f[j]);
    }
  }
  _mm512_storeu_ps(p.out[0], f[0]);
  _mm512_storeu_ps(p.out[1], f[1]);
}

void bf16_pair_tile(const PairArgs& p, const PackedMat& m) {
  const int64_t nc = m.cols / 2;  // a multiple of 4
  __m512 acc[2][2];
  acc[0][0] = acc[0][1] = acc[1][0] = acc[1][1] = _mm512_setzero_ps();
  for (int64_t c = 0; c < nc; c += 2) {
#pragma GCC unroll 2
    for (int u = 0; u < 2; ++u)
#pragma GCC unroll 2
      for (int j = 0; j < 2; ++j) {
        const uint8_t* q = p.tc[j] + (c + u) * kChunkBytes;
        p.run[j]->ahead(q);
        const __m512i x = bcast4(p.xb[j] + 2 * (c + u));
        acc[j][u] = _mm512_dpbf16_ps(acc[j][u], (__m512bh)_mm512_loadu_si512(q), (__m512bh)x);
      }
  }
  _mm512_storeu_ps(p.out[0], _mm512_add_ps(acc[0][0], acc[0][1]));
  _mm512_storeu_ps(p.out[1], _mm512_add_ps(acc[1][0], acc[1][1]));
}

template <void (*Tile)(const PairArgs&, const PackedMat&)>
void gemv_pair(const PackedMat& m1, const PackedMat& m2, int64_t t0, int64_t t1, const Act& a1, const Act& a2,
               float* out1, float* out2, int64_t ld) {
  (void)ld;  // one token each: out[(tile - t0) * 16 + r]
  const PackedMat* m[2] = {&m1, &m2};
  const Act* a[2] = {&a1, &a2};
  Run run[2];
  PairArgs p;
  for (int j = 0; j < 2; ++j) {
    run[j] = Run::open(m[j]->codes + static_cast<size_t>(t0) * m[j]->tile_code_bytes(),
                       m[j]->codes + static_cast<size_t>(t1) * m[j]->tile_code_bytes(), Tile == bf16_pair_tile);
    p.run[j] = &run[j];
    const int64_t r = a[j]->row(0), K = a[j]->K, G = m1.groups();
    p.xq[j] = a[j]->q ? a[j]->q + r * K : nullptr;
    p.d[j] = a[j]->d ? a[j]->d + r * G : nullptr;
    p.off[j] = a[j]->off ? a[j]->off + r * G : nullptr;
    p.xb[j] = a[j]->b ? a[j]->b + r * K : nullptr;
  }
  for (int64_t tile = t0; tile < t1; ++tile) {
    for (int j = 0; j < 2; ++j) {
      p.tc[j] = m[j]->codes + static_cast<size_t>(tile) * m[j]->tile_code_bytes();
      p.ts[j] = m[j]->scales ? m[j]->scales + static_cast<size_t>(tile) * m[j]->tile_scale_bytes() : nullptr;
    }
    p.out[0] = out1 + (tile - t0) * kRowTile;
    p.out[1] = out2 + (tile - t0) * kRowTile;
    Tile(p, m1);
  }
}

// Token blocks of 4, then 2, then 1 per tile; later blocks re-read the tile from L1/L2.
template <typename F>
inline void token_blocks(int64_t n, F&& f) {
  int64_t t = 0;
  for (; t + 4 <= n; t += 4) f(std::integral_constant<int, 4>{}, t);
  if (t + 2 <= n) {
    f(std::integral_constant<int, 2>{}, t);
    t += 2;
  }
  if (t < n) f(std::integral_constant<int, 1>{}, t);
}

void gemv_q4_avx512(const PackedMat& m, int64_t t0, int64_t t1, const Act& a, float* out, int64_t ld) {
  const Run run = Run::open(m.codes + static_cast<size_t>(t0) * m.tile_code_bytes(),
                            m.codes + static_cast<size_t>(t1) * m.tile_code_bytes(), false);
  for (int64_t tile = t0; tile < t1; ++tile) {
    const uint8_t* tc = m.codes + static_cast<size_t>(tile) * m.tile_code_bytes();
    const auto* ts = reinterpret_cast<const uint16_t*>(m.scales + static_cast<size_t>(tile) * m.tile_scale_bytes());
    float* o = out + (tile - t0) * kRowTile;
    token_blocks(a.n, [&](auto nt, int64_t t) { q4_tile<decltype(nt)::value>(tc, ts, run, m, a, t, o + t * ld, ld); });
  }
}

void gemv_q8_avx512(const PackedMat& m, int64_t t0, int64_t t1, const Act& a, float* out, int64_t ld) {
  const Run run = Run::open(m.codes + static_cast<size_t>(t0) * m.tile_code_bytes(),
                            m.codes + static_cast<size_t>(t1) * m.tile_code_bytes(), false);
  for (int64_t tile = t0; tile < t1; ++tile) {
    const uint8_t* tc = m.codes + static_cast<size_t>(tile) * m.tile_code_bytes();
    const auto* ts = reinterpret_cast<const float*>(m.scales + static_cast<size_t>(tile) * m.tile_scale_bytes());
    float* o = out + (tile - t0) * kRowTile;
    token_blocks(a.n, [&](auto nt, int64_t t) { q8_tile<decltype(nt)::value>(tc, ts, run, m, a, t, o + t * ld, ld); });
  }
}

void gemv_bf16_avx512(const PackedMat& m, int64_t t0, int64_t t1, const Act& a, float* out, int64_t ld) {
  const Run run = Run::open(m.codes + static_cast<size_t>(t0) * m.tile_code_bytes(),
                            m.codes + static_cast<size_t>(t1) * m.tile_code_bytes(), true);
  for (int64_t tile = t0; tile < t1; ++tile) {
    const uint8_t* tc = m.codes + static_cast<size_t>(tile) * m.tile_code_bytes();
    float* o = out + (tile - t0) * kRowTile;
    token_blocks(a.n, [&](auto nt, int64_t t) { bf16_tile<decltype(nt)::value>(tc, run, m, a, t, o + t * ld, ld); });
  }
}

}  // namespace

// expert_ffn_avx2.cpp: AVX2 code, valid on every CPU that passes the AVX-512 check.
void quant_act_avx2(const float* x, int64_t K, int64_t group, int32_t offset, int8_t* q, float* d, int32_t* off);
void silu_mul_avx2(const float* g, const float* u, float* h, int64_t n);
void dequant_tile_avx2(const PackedMat& m, int64_t tile, float* out);

const KernelSet& kernels_avx512() {
  static const KernelSet k{"avx512-vnni",      gemv_q4_avx512,           gemv_q8_avx512,
                           gemv_bf16_avx512,   quant_act_avx2,           silu_mul_avx2,
                           dequant_tile_avx2,  gemv_pair<q4_pair_tile>, gemv_pair<q8_pair_tile>,
                           gemv_pair<bf16_pair_tile>};
  return k;
}

}  // namespace mt::cpu::expert_detail
