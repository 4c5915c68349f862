#include "tools/moetier/bench_gguf.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <omp.h>

#include "cpu_kernels/expert_ffn_internal.h"  // cpu_isa_level
#include "cpu_kernels/ggml_gemv.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "runtime/core/ggml_tiles.h"
#include "cpu_kernels/read_bandwidth.h"
#include "runtime/core/dtype.h"
#include "runtime/core/ggml_types.h"
#include "tools/moetier/median.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {

using Clock = std::chrono::steady_clock;


bool type_from_name(const std::string& s, GgmlType& t) {
  for (GgmlType c : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K})
    if (ggml_type_name(uint32_t(c)) == s) return t = c, true;
  return false;
}

// The tile GEMV's rows in the variants list: at the AVX-512 level, and at AVX2 for the types
// with an AVX2 tile kernel.
constexpr int kTileVariant = 99, kTileVariantAvx2 = 98;

const char* isa_name(int level) { return level >= 2 ? "avx512" : level == 1 ? "avx2" : "scalar"; }

}  // namespace

int bench_gguf(const Args& a, nlohmann::ordered_json& out) {
  auto runs = a.get_int("runs", 7, 1, 1000);
  auto threads = a.get_int("threads", 0, 0, 4096);
  auto batch = a.get_int("batch", 1, 1, 64);
  if (!runs || !threads || !batch)
    return std::fprintf(stderr, "error: %s\n", (!runs ? runs : !threads ? threads : batch).error().c_str()), 2;
  if (*threads > 0) omp_set_num_threads(static_cast<int>(*threads));
  std::vector<GgmlType> types;
  std::stringstream list(a.get_or("type", "Q4_K,Q6_K,Q8_0"));
  for (std::string item; std::getline(list, item, ',');) {
    GgmlType t;
    if (!type_from_name(item, t))
      return std::fprintf(stderr, "error: --type %s: one of Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K\n", item.c_str()), 2;
    types.push_back(t);
  }
  // A routed expert's gate matrix of DeepSeek V3: 2048 rows of 7168; enough copies that every
  // product reads from RAM (> 512 MB). --batch tokens per product (each weight read once).
  const int64_t rows = 2048, cols = 7168, n = *batch;
  std::vector<float> x(static_cast<size_t>(cols * n)), y(static_cast<size_t>(rows * n));
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& v : x) v = nd(rng);
  const int top = cpu::expert_detail::cpu_isa_level();
  std::printf("bench gguf: %lld x %lld matrices (a routed expert's gate), %lld token%s, %d threads\n",
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(n), n > 1 ? "s" : "",
              omp_get_max_threads());
  std::printf("  int8: activations quantised to 8 bits, integer dot products (the default path)\n"
              "  fp32: codes widened to fp32, fp32 activations (the exact path); scalar: the reference decoder\n"
              "  tile: the int8 path on row-interleaved tiles of the same blocks (AVX-512 and AVX2; every type listed)\n");
  std::printf("%-6s %-7s %-5s %10s %10s %8s  %s\n", "type", "ISA", "path", "RAM GB/s", "GEMV GB/s", "ratio",
              "per-run ratios");
  for (GgmlType t : types) {
    const GgmlTypeInfo* ti = ggml_type_info(uint32_t(t));
    const size_t mat = size_t(rows * cols / ti->block * ti->bytes);
    const int64_t copies = std::max<int64_t>(8, int64_t((size_t{512} << 20) / mat) + 1);
    const size_t total = mat * size_t(copies);
    auto* w = static_cast<uint8_t*>(cpu::alloc_huge(total));
    ggml_fill_random_blocks(uint32_t(t), w, int64_t(mat / size_t(ti->bytes)), rng());
    for (int64_t c = 1; c < copies; ++c) std::memcpy(w + size_t(c) * mat, w, mat);
    // The scalar level once, then each SIMD level's integer and fp32 paths.
    std::vector<std::pair<int, cpu::GgmlGemvPath>> variants = {{0, cpu::GgmlGemvPath::Fp32}};
    for (int level = 1; level <= top; ++level)
      for (cpu::GgmlGemvPath p : {cpu::GgmlGemvPath::Int8, cpu::GgmlGemvPath::Fp32}) variants.emplace_back(level, p);
    // The row-interleaved tiles of the same blocks (runtime/core/ggml_tiles.h), where the type has them; their
    // GB/s count the tile bytes read (2.8% more than the blocks for Q4_K).
    const bool tiled = cpu::ggml_gemv_tiles_native(uint32_t(t), top);
    const int64_t blocks = cols / ti->block;
    const size_t tile_mat = size_t(rows / kTileRows * blocks * ggml_tile_block_bytes(uint32_t(t)));
    const int64_t tile_copies = tiled ? std::max<int64_t>(8, int64_t((size_t{512} << 20) / tile_mat) + 1) : 0;
    uint8_t* tw = tiled ? static_cast<uint8_t*>(cpu::alloc_huge(tile_mat * size_t(tile_copies))) : nullptr;
    if (tiled) {
      ggml_tile_pack_matrix(uint32_t(t), w, rows, cols, tw);
      for (int64_t c = 1; c < tile_copies; ++c) std::memcpy(tw + size_t(c) * tile_mat, tw, tile_mat);
      if (cpu::ggml_gemv_tiles_native(uint32_t(t), 1)) variants.emplace_back(kTileVariantAvx2, cpu::GgmlGemvPath::Int8);
      if (top >= 2) variants.emplace_back(kTileVariant, cpu::GgmlGemvPath::Int8);
    }
    for (auto [level, path] : variants) {
      const bool tile = level == kTileVariant || level == kTileVariantAvx2;
      const int isa = level == kTileVariant ? 2 : level == kTileVariantAvx2 ? 1 : level;
      const char* path_name = tile ? "tile" : level == 0 ? "fp32" : path == cpu::GgmlGemvPath::Int8 ? "int8" : "fp32";
      const size_t bytes = tile ? tile_mat : mat;
      int64_t next = 0;
      auto gemv = [&, level = level, path = path, tile] {
        if (tile) {
          cpu::ggml_gemv_tiles(uint32_t(t), tw + size_t(next) * tile_mat, rows, cols, n, x.data(), y.data(), isa);
          next = (next + 1) % tile_copies;
          return;
        }
        cpu::ggml_gemv_tokens(uint32_t(t), w + size_t(next) * mat, rows, cols, n, x.data(), y.data(), level, path);
        next = (next + 1) % copies;
      };
      gemv();
      std::vector<double> bw, gbs, ratio;
      for (int64_t r = 0; r < *runs; ++r) {
        const double m = cpu::measure_read_bandwidth_gbs(size_t{1} << 30, static_cast<int>(*threads), 0.3);
        int64_t calls = 0;
        const auto t0 = Clock::now();
        double el = 0;
        do {
          gemv();
          ++calls;
          el = std::chrono::duration<double>(Clock::now() - t0).count();
        } while (el < 0.3);
        bw.push_back(m);
        gbs.push_back(double(calls) * double(bytes) / el / 1e9);
        ratio.push_back(gbs.back() / m);
      }
      std::string per;
      for (double r : ratio) {
        char b[16];
        std::snprintf(b, sizeof b, "%.3f ", r);
        per += b;
      }
      const bool simd = tile || (level > 0 && cpu::ggml_gemv_has_kernel(uint32_t(t), level, path));
      std::printf("%-6s %-7s %-5s %10.1f %10.1f %7.1f%%  %s%s\n", ti->name, isa_name(isa), path_name, median(bw),
                  median(gbs), 100.0 * median(ratio), per.c_str(), level > 0 && !simd ? "(no SIMD kernel: scalar)" : "");
      out["results"].push_back({{"type", ti->name}, {"isa", isa_name(isa)}, {"path", path_name}, {"simd", simd},
                                {"membw_gbs", median(bw)}, {"gemv_gbs", median(gbs)},
                                {"ratio_median", median(ratio)}, {"ratios", ratio}});
    }
    cpu::free_huge(w, total);
    if (tw) cpu::free_huge(tw, tile_mat * size_t(tile_copies));
  }
  out["threads"] = omp_get_max_threads();
  out["rows"] = rows;
  out["cols"] = cols;
  out["tokens"] = n;
  return 0;
}

}  // namespace mt::cli
