// Decode-sized products from row-interleaved tiles of GGUF blocks (runtime/core/ggml_tiles.h): y[r] =
// sum_k W[r, k] x[k] for one token or a few, W as tiles of 16 rows. The Int8 path's arithmetic
// (ggml_gemv.h): x quantised once per call to 8-bit blocks of 256, each sub-block's dot an exact
// int32, scaled once per block in fp32, so a tile gives what the Int8 path gives its 16 rows up
// to fp32 rounding of the scaled block sums.
//   Level 2 (AVX-512 VNNI): the 16 rows in the 16 int32 lanes; each 64-byte plane of codes (a
//   mask, or for the codes spread over spare bits a few shifts and bit selects) one vpdpbusd
//   with 4 activation codes broadcast; a group's scales one vpmulld per 16 rows (one vpdpwssd
//   where its sum fits in int16: Q2_K, Q3_K), mins by vpdpwssd; on a CPU with GFNI and VBMI,
//   Q2_K's planes one vgf2p8affineqb each and a pair of groups' scales and mins one vpermb (per
//   type: docs/kernels.md, "GGUF row tiles").
//   Level 1 (AVX2): every tiled type with vpmaddubsw and vpmaddwd, 8 rows a vector
//   (ggml_gemv_tiles_avx2.cpp).
//   Otherwise (level 0) the tile is unpacked to its GGUF blocks
//   and run by ggml_gemv_tokens: correct, but slower than the blocks themselves.
#pragma once

#include <cstdint>
#include <optional>

namespace mt::cpu {

// Whether `type`'s tiles have a kernel of their own at isa_level (clamped to this CPU's), so that
// tiling its matrices pays: every tiled type at levels 1 and 2.
bool ggml_gemv_tiles_native(uint32_t type, int isa_level);

// How a thread's run of tiles is prefetched in software: each line `near` bytes ahead to L1
// (prefetcht0) and `far` bytes ahead to L2 (prefetcht1); 0 turns that distance off, and {0, 0}
// leaves the stream to the hardware prefetchers. The prefetch changes timing only, never a result.
struct TilePrefetch {
  int64_t near = 0, far = 0;
  bool operator==(const TilePrefetch&) const = default;
};
// What the Intel VM needed at every type (2 KB to L1, 8 KB to L2): without a software prefetch
// its hardware prefetchers ran far behind (Q2_K at 0.42 of RAM bandwidth); one distance to L1 was
// best at 4 KB (Q4_K 0.79, Q2_K 0.71), and the L2 prefetch on top took Q4_K to 0.93 and Q2_K to
// 0.77 (docs/benchmarks.md). The L1 fill buffers are few; the far prefetch keeps more misses in
// flight while the near one hides the L2 latency.
inline constexpr TilePrefetch kTilePrefetchClassic{2048, 8192};
// The plan for `type`'s kernel at isa_level (1 AVX2, 2 AVX-512) on this CPU: the classic
// plan except on AMD CPUs, where a core's stream read best at 30-33 GB/s a core (one thread from
// RAM, the load a core carries in the VM's fast regime) with (paired rounds of `bench gguf
// --threads 1 --tile-prefetch auto,...`, docs/benchmarks.md, seventh session):
//   Q4_K, Q5_K, Q6_K: at AVX-512 8 KB to L1 alone (any prefetcht1 cost them 10-25%; 8 KB beat
//     4 KB by 1-9%; AMD runs these VNNI kernels for passes of several tokens only:
//     tile_kernel_level); at AVX2 farther: Q4_K and Q6_K 16 KB to L1 and 32 KB to L2, Q5_K 12 KB
//     and 24 KB (two threads in the fast regime: Q4_K 0.93-0.96 against 0.81-0.85 at 8 KB + 16 KB);
//   Q2_K, Q3_K: at AVX-512 8 KB to L1 and 16 KB to L2 (0.99-1.02 against the classic's 0.91-0.93);
//     at AVX2 the classic plan (bound by their arithmetic: no plan moved them off 0.70-0.74);
//   Q8_0: none (the hardware prefetchers alone: 4-7% over 4 KB to L1, 24% over the classic).
// What seems to decide it is the VNNI kernels' light arithmetic, not their width: a 256-bit VNNI
// Q5_K read as the 512-bit one, and padded with dead adds to the AVX2 pace the 512-bit one gained
// from prefetcht1 too (0.75 -> 0.86), where the AVX2 kernels read 0.95-1.02 with it.
TilePrefetch tile_prefetch_auto(uint32_t type, int isa_level);

// The kernel level `generate` runs nt tokens of `type`'s tiles at, for isa_level (clamped to this
// CPU's): isa_level, except on an AMD CPU at level 2 for one token of Q4_K, Q5_K or Q6_K and two
// of Q4_K, which run the AVX2 kernel (level 1, with its own prefetch plan). Measured on Zen 4
// (docs/benchmarks.md, eighth session), one token: one thread from RAM 1.00-1.02 of the bandwidth
// against 0.84-0.86 for the VNNI kernels, two threads in the fast regime 0.90-0.97 against
// 0.77-0.82, in the low regime 0.93 against 0.95 (Q4_K). The VNNI kernels outrun their stream with
// light arithmetic and refuse the L2 prefetch that keeps the AVX2 ones fed (tile_prefetch_auto).
// A pass of more tokens computes more per byte and the wider kernel catches up: at two tokens
// Q4_K's AVX2 kernel still read 0.82-0.85 against 0.66-0.72, Q6_K's even, Q5_K's slower; at three
// Q4_K's even, at four slower.
int tile_kernel_level(uint32_t type, int nt, int isa_level);

// rows (a multiple of kTileRows) x cols of `type` as tiles at w (tile t = rows 16t..16t+15),
// n tokens: x [n][cols], y [n][rows]. isa_level clamped to this CPU's; type ggml_tile_supported.
// allow_gfni false keeps level 2 off the GFNI/VBMI kernels where the CPU has them (to test the
// path of AVX-512 CPUs without). prefetch: tile_prefetch_auto's plan (for the kernel run) where
// absent. auto_kernel: the kernel as tile_kernel_level chooses; false runs isa_level's own at every
// token count (to test and time it against that choice).
void ggml_gemv_tiles(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, int64_t n, const float* x, float* y,
                     int isa_level, bool allow_gfni = true, std::optional<TilePrefetch> prefetch = std::nullopt,
                     bool auto_kernel = true);

namespace ggml_gemv_detail {
struct Q8Act;
// A thread's run of tiles as its kernels prefetch it: the line at p is prefetched `far` bytes ahead
// while p < far_end and `near` bytes ahead while p < near_end (an end at the run's start: none),
// so that no prefetch leaves the run.
struct TileStream {
  const uint8_t* near_end;
  const uint8_t* far_end;
  int64_t near, far;
};
// Always inlined: the AVX2 and AVX-512 kernel files build it under different flags, and no
// out-of-line copy of either should serve the other.
[[gnu::always_inline]] inline void tile_prefetch_line(const uint8_t* p, const TileStream& s) {
  if (p < s.far_end) __builtin_prefetch(p + s.far, 0, 2);
  if (p < s.near_end) __builtin_prefetch(p + s.near, 0, 3);
}
// out[t * 16 + r] = row r of the tile dotted with token t, t < nt; prefetching as `stream` says.
using TileDot = void (*)(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream stream);
// nt in 1..kMaxTokens; null: no kernel. gfni: the CPU has GFNI and VBMI (Q2_K then runs its form for them).
TileDot avx512_tile_dot(uint32_t type, int nt, bool gfni);
TileDot avx512_gfni_tile_dot(uint32_t type, int nt);  // null where the type has no GFNI/VBMI form
TileDot avx2_tile_dot(uint32_t type, int nt);          // null where the type has no AVX2 form
}  // namespace ggml_gemv_detail

}  // namespace mt::cpu
