#include "cpu_kernels/packed_matmul.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_kernels/expert_ffn_internal.h"

namespace mt::cpu {

using namespace expert_detail;

namespace {

ExpertQuant quant_of(DType t) { return t == DType::Q4_PACKED ? ExpertQuant::Q4 : ExpertQuant::Q8; }

void check_packed(DType packed, int64_t cols, int64_t group) {
  if (!is_packed(packed)) throw std::invalid_argument("pack_weight: not a packed dtype");
  const int64_t ck = chunk_k(quant_of(packed));
  if (group <= 0 || group % ck || cols % group)
    throw std::invalid_argument("pack_weight: group " + std::to_string(group) + " must divide cols " +
                                std::to_string(cols) + " and be a multiple of " + std::to_string(ck));
}

PackedMat mat_of(const WeightView& w) {
  PackedMat m;
  m.quant = quant_of(w.dtype);
  m.rows = w.rows;
  m.rows_padded = padded_rows(w.rows);
  m.cols = w.cols;
  m.group = w.block;
  m.codes = w.data;
  m.scales = w.data + round_up(m.tile_code_bytes() * static_cast<size_t>(m.tiles()), 64);
  return m;
}

// Row tiles per work item: 4 tiles (64 rows) keep a thread's stream long and the split even.
constexpr int64_t kItemTiles = 4;

}  // namespace

struct PackedMatmulScratch::Impl {
  ActBuf act;
  std::vector<float> tail;  // the last, partial row tile: [n][16]
};

PackedMatmulScratch::PackedMatmulScratch() : impl_(std::make_unique<Impl>()) {}
PackedMatmulScratch::~PackedMatmulScratch() = default;
PackedMatmulScratch::PackedMatmulScratch(PackedMatmulScratch&&) noexcept = default;
PackedMatmulScratch& PackedMatmulScratch::operator=(PackedMatmulScratch&&) noexcept = default;
size_t PackedMatmulScratch::bytes() const { return impl_->act.store.capacity() + impl_->tail.capacity() * sizeof(float); }

size_t packed_weight_bytes(DType packed, int64_t rows, int64_t cols, int64_t group) {
  return packed_matrix_bytes(quant_of(packed), rows, cols, group);
}

void pack_weight(DType packed, const float* w, int64_t rows, int64_t cols, int64_t group, uint8_t* dst) {
  check_packed(packed, cols, group);
  std::memset(dst, 0, packed_weight_bytes(packed, rows, cols, group));
  pack_matrix(quant_of(packed), w, rows, cols, group, dst);
}

void pack_weight_rows(DType packed, const float* w_rows, int64_t r0, int64_t n, int64_t rows, int64_t cols,
                      int64_t group, uint8_t* dst) {
  check_packed(packed, cols, group);
  if (r0 < 0 || n <= 0 || r0 + n > rows || r0 % kRowTile || (n % kRowTile && r0 + n != rows))
    throw std::invalid_argument("pack_weight_rows: rows [" + std::to_string(r0) + ", " + std::to_string(r0 + n) +
                                ") are not whole 16-row tiles of a " + std::to_string(rows) + "-row matrix");
  // The slab packed as a matrix of its own, then its tiles' codes and scales copied to their
  // places in the whole (both parts are tile-major).
  std::vector<uint8_t> slab(packed_weight_bytes(packed, n, cols, group));
  pack_weight(packed, w_rows, n, cols, group, slab.data());
  const PackedMat whole = mat_of(WeightView{packed, dst, rows, cols, nullptr, group});
  const PackedMat part = mat_of(WeightView{packed, slab.data(), n, cols, nullptr, group});
  const size_t t0 = static_cast<size_t>(r0 / kRowTile), st = static_cast<size_t>(part.tiles());
  std::memcpy(const_cast<uint8_t*>(whole.codes) + t0 * whole.tile_code_bytes(), part.codes, st * part.tile_code_bytes());
  std::memcpy(const_cast<uint8_t*>(whole.scales) + t0 * whole.tile_scale_bytes(), part.scales,
              st * part.tile_scale_bytes());
}

bool packed_matmul(const WeightView& w, const float* x, int64_t n, float* y, const ExpertKernelConfig& cfg,
                   PackedMatmulScratch& scratch) {
  if (!is_packed(w.dtype)) return false;
  check_packed(w.dtype, w.cols, w.block);
  if (n <= 0 || w.rows <= 0) return true;
  const PackedMat m = mat_of(w);
  const KernelSet& ks = kernels_for(cfg);
  const GemvFn gemv = ks.get(m.quant);
  PackedMatmulScratch::Impl& s = scratch.impl();
  s.act.prepare(m.quant, n, m.cols, m.group);
  for (int64_t t = 0; t < n; ++t) s.act.fill_row(ks, m.quant, t, x + t * m.cols);
  const Act a = s.act.act;

  // Full tiles write straight into y (row stride = rows); the partial last tile goes through
  // `tail`, so the padded rows never land in y.
  const int64_t full = w.rows / kRowTile, tiles = m.tiles();
  const bool par = w.rows * w.cols * n > (int64_t{1} << 16);
  const Gemv2Fn pair = ks.get_pair(m.quant);
  int64_t done = 0;  // full tiles written
  if (n == 1 && pair && full >= 2 * kItemTiles) {
    // One token: the two halves of the matrix in lockstep, two DRAM streams per thread (which
    // one thread streams faster than one, as for the experts' gate/up pairs).
    const int64_t half = full / 2, items = (half + kItemTiles - 1) / kItemTiles;
    PackedMat m2 = m;
    m2.codes = m.codes + static_cast<size_t>(half) * m.tile_code_bytes();
    m2.scales = m.scales + static_cast<size_t>(half) * m.tile_scale_bytes();
    m2.rows = m2.rows_padded = (full - half) * kRowTile;
#pragma omp parallel for schedule(static) if (par && items > 1)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t t0 = it * kItemTiles, t1 = std::min(half, t0 + kItemTiles);
      pair(m, m2, t0, t1, a, a, y + t0 * kRowTile, y + (half + t0) * kRowTile, w.rows);
    }
    done = 2 * half;
  }
  const int64_t items = (full - done + kItemTiles - 1) / kItemTiles;
#pragma omp parallel for schedule(static) if (par && items > 1)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t t0 = done + it * kItemTiles, t1 = std::min(full, t0 + kItemTiles);
    gemv(m, t0, t1, a, y + t0 * kRowTile, w.rows);
  }
  if (tiles > full) {
    s.tail.resize(static_cast<size_t>(n * kRowTile));
    gemv(m, full, tiles, a, s.tail.data(), kRowTile);
    const int64_t r0 = full * kRowTile, nr = w.rows - r0;
    for (int64_t t = 0; t < n; ++t) std::memcpy(y + t * w.rows + r0, s.tail.data() + t * kRowTile, nr * sizeof(float));
  }
  return true;
}

}  // namespace mt::cpu
