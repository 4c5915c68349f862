#include "tools/moetier/bench_gguf.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <omp.h>

#include "cpu_kernels/dense_gemv.h"
#include "cpu_kernels/expert_ffn_internal.h"  // cpu_isa_level
#include "cpu_kernels/ggml_gemv.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "cpu_kernels/huge_buffer.h"
#include "cpu_kernels/read_bandwidth.h"
#include "runtime/core/dtype.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"
#include "runtime/core/weight_view.h"
#include "tools/moetier/bench_threads.h"
#include "tools/moetier/median.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {

using Clock = std::chrono::steady_clock;


bool type_from_name(const std::string& s, GgmlType& t) {
  for (GgmlType c : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                     GgmlType::F32, GgmlType::F16, GgmlType::BF16})
    if (ggml_type_name(uint32_t(c)) == s) return t = c, true;
  return false;
}

// "NEAR:FAR" in bytes, each a multiple of 64 in [0, 1 MiB].
std::optional<cpu::TilePrefetch> parse_prefetch_plan(const std::string& s) {
  const size_t colon = s.find(':');
  if (colon == std::string::npos) return std::nullopt;
  int64_t d[2];
  const std::string parts[2] = {s.substr(0, colon), s.substr(colon + 1)};
  for (int i = 0; i < 2; ++i) {
    const std::string& p = parts[i];
    if (p.empty() || p.size() > 7 || p.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    d[i] = std::stoll(p);
    if (d[i] % 64 != 0 || d[i] > (int64_t{1} << 20)) return std::nullopt;
  }
  return cpu::TilePrefetch{d[0], d[1]};
}

const char* isa_name(int level) { return level >= 2 ? "avx512" : level == 1 ? "avx2" : "scalar"; }

}  // namespace

int bench_gguf(const Args& a, nlohmann::ordered_json& out) {
  auto runs = a.get_int("runs", 7, 1, 1000);
  auto threads = apply_bench_threads(a);
  auto batch = a.get_int("batch", 1, 1, 64);
  if (!runs || !threads || !batch)
    return std::fprintf(stderr, "error: %s\n", (!runs ? runs : !threads ? threads : batch).error().c_str()), 2;
  // --tile-prefetch: the tile rows' software prefetch plans, one row each, interleaved (auto: as
  // generate runs them; on: the classic plan; off: the hardware prefetchers alone; NEAR:FAR bytes).
  std::vector<std::optional<cpu::TilePrefetch>> prefetch_plans;
  {
    std::stringstream pf_list(a.get_or("tile-prefetch", "auto"));
    for (std::string item; std::getline(pf_list, item, ',');) {
      if (item == "auto") prefetch_plans.push_back(std::nullopt);
      else if (item == "on") prefetch_plans.push_back(cpu::kTilePrefetchClassic);
      else if (item == "off") prefetch_plans.push_back(cpu::TilePrefetch{0, 0});
      else if (item == "both") prefetch_plans.insert(prefetch_plans.end(), {cpu::kTilePrefetchClassic, cpu::TilePrefetch{0, 0}});
      else if (auto plan = parse_prefetch_plan(item)) prefetch_plans.push_back(*plan);
      else
        return std::fprintf(stderr,
                            "error: --tile-prefetch %s: a list of auto, on, off, both or NEAR:FAR (bytes ahead to L1 and "
                            "to L2, multiples of 64 up to 1 MiB; 0 for none), e.g. auto,4096:16384\n",
                            item.c_str()),
               2;
    }
    if (prefetch_plans.empty()) return std::fprintf(stderr, "error: --tile-prefetch: an empty list\n"), 2;
  }
  const bool tiles_only = a.has("tiles-only");
  std::vector<GgmlType> types;
  std::stringstream list(a.get_or("type", "Q4_K,Q6_K,Q8_0"));
  for (std::string item; std::getline(list, item, ',');) {
    GgmlType t;
    if (!type_from_name(item, t))
      return std::fprintf(stderr, "error: --type %s: one of Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, F32, F16, BF16\n",
                          item.c_str()),
             2;
    if (ggml_float_dtype(uint32_t(t)) && *batch > cpu::kGemvMaxTokens)
      return std::fprintf(stderr, "error: --type %s takes at most --batch %lld (the dense GEMV's tokens per pass)\n",
                          item.c_str(), static_cast<long long>(cpu::kGemvMaxTokens)),
             2;
    types.push_back(t);
  }
  // A routed expert's gate matrix of DeepSeek V3: 2048 rows of 7168; enough copies that every
  // product reads from RAM (> 512 MB). --batch tokens per product (each weight read once).
  const int64_t rows = 2048, cols = 7168, n = *batch;
  const int pass_tokens = int(std::min<int64_t>(n, cpu::ggml_gemv_detail::kMaxTokens));  // the first pass's
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
              "  tile: the int8 path on row-interleaved tiles of the same blocks (AVX-512 and AVX2; every type listed);\n"
              "        prefetch (--tile-prefetch): tile = as generate runs them (per type and CPU), tile-sw = the\n"
              "        classic 2 KB to L1 + 8 KB to L2, tile-hw = the hardware prefetchers alone, tile-NEAR:FAR;\n"
              "        (avx2 kernel): the AVX2 kernel generate runs at AVX-512 (AMD: 1 token of Q4_K-Q6_K, 2 of Q4_K),\n"
              "        (vnni): the AVX-512 VNNI kernel it runs in its place\n"
              "  dense: F32, F16 and BF16 matrices through the dense decode GEMV, as generate runs them\n");
  std::printf("%-6s %-7s %-22s %10s %10s %8s  %s\n", "type", "ISA", "path", "RAM GB/s", "GEMV GB/s", "ratio",
              "per-run ratios");
  for (GgmlType t : types) {
    const GgmlTypeInfo* ti = ggml_type_info(uint32_t(t));
    const size_t mat = size_t(rows * cols / ti->block * ti->bytes);
    const int64_t copies = std::max<int64_t>(8, int64_t((size_t{512} << 20) / mat) + 1);
    const size_t total = mat * size_t(copies);
    const cpu::HugeBuffer w_buf(total);
    uint8_t* w = w_buf.data();
    ggml_fill_random_blocks(uint32_t(t), w, int64_t(mat / size_t(ti->bytes)), rng());
    for (int64_t c = 1; c < copies; ++c) std::memcpy(w + size_t(c) * mat, w, mat);
    // The scalar level once, then each SIMD level's integer and fp32 paths.
    struct Variant {
      int level;  // the ISA level the kernel runs at
      cpu::GgmlGemvPath path;
      bool tile = false;  // the tile GEMV (Int8) rather than the blocks'
      std::optional<cpu::TilePrefetch> prefetch = std::nullopt;  // tiles: the plan asked for (none: auto)
      bool own_kernel = false;  // tiles: the level's own kernel where tile_kernel_level picks another
      bool dense = false;  // F32/F16/BF16: the dense GEMV, which generate runs for them
    };
    std::vector<Variant> variants;
    const std::optional<DType> dense = ggml_float_dtype(uint32_t(t));
    if (dense)
      for (int level = 1; level <= top; ++level) variants.push_back({level, cpu::GgmlGemvPath::Fp32, false, std::nullopt, false, true});
    if (!tiles_only && !dense) {
      variants.push_back({0, cpu::GgmlGemvPath::Fp32});
      for (int level = 1; level <= top; ++level)
        for (cpu::GgmlGemvPath p : {cpu::GgmlGemvPath::Int8, cpu::GgmlGemvPath::Fp32}) variants.push_back({level, p});
    }
    // The row-interleaved tiles of the same blocks (runtime/core/ggml_tiles.h), where the type has them; their
    // GB/s count the tile bytes read (2.8% more than the blocks for Q4_K).
    const bool tiled = !dense && cpu::ggml_gemv_tiles_native(uint32_t(t), top);
    const int64_t blocks = cols / ti->block;
    const size_t tile_mat = size_t(rows / kTileRows * blocks * ggml_tile_block_bytes(uint32_t(t)));
    const int64_t tile_copies = tiled ? std::max<int64_t>(8, int64_t((size_t{512} << 20) / tile_mat) + 1) : 0;
    const cpu::HugeBuffer tw_buf = tiled ? cpu::HugeBuffer(tile_mat * size_t(tile_copies)) : cpu::HugeBuffer();
    uint8_t* tw = tw_buf.data();
    if (tiled) {
      ggml_tile_pack_matrix(uint32_t(t), w, rows, cols, tw);
      for (int64_t c = 1; c < tile_copies; ++c) std::memcpy(tw + size_t(c) * tile_mat, tw, tile_mat);
      for (const std::optional<cpu::TilePrefetch>& pf : prefetch_plans) {
        if (cpu::ggml_gemv_tiles_native(uint32_t(t), 1)) variants.push_back({1, cpu::GgmlGemvPath::Int8, true, pf});
        if (top >= 2) variants.push_back({2, cpu::GgmlGemvPath::Int8, true, pf});
        // The VNNI kernel beside the one generate runs in its place, so the choice stays measured.
        if (top >= 2 && cpu::tile_kernel_level(uint32_t(t), pass_tokens, 2) != 2)
          variants.push_back({2, cpu::GgmlGemvPath::Int8, true, pf, true});
      }
    }
    // Rounds outside, variants inside: every variant samples the same stretch of the machine's
    // noise, each run a ratio to the RAM bandwidth sampled just before it.
    std::vector<int64_t> next(variants.size(), 0);
    std::vector<std::vector<double>> bw(variants.size()), gbs(variants.size()), ratio(variants.size());
    for (int64_t r = -1; r < *runs; ++r) {  // round -1: one untimed call each (warm-up)
      for (size_t v = 0; v < variants.size(); ++v) {
        const Variant& var = variants[v];
        const size_t bytes = var.tile ? tile_mat : mat;
        auto gemv = [&] {
          if (var.dense) {
            const WeightView view{*dense, w + size_t(next[v]) * mat, rows, cols};
            if (!cpu::dense_gemv(view, x.data(), n, y.data(), var.level))  // every level from AVX2 has them
              throw std::runtime_error(std::string("bench gguf: no dense GEMV for ") + ti->name + " at " + isa_name(var.level));
            next[v] = (next[v] + 1) % copies;
            return;
          }
          if (var.tile) {
            cpu::ggml_gemv_tiles(uint32_t(t), tw + size_t(next[v]) * tile_mat, rows, cols, n, x.data(), y.data(), var.level,
                                 true, var.prefetch, !var.own_kernel);
            next[v] = (next[v] + 1) % tile_copies;
            return;
          }
          cpu::ggml_gemv_tokens(uint32_t(t), w + size_t(next[v]) * mat, rows, cols, n, x.data(), y.data(), var.level,
                                var.path);
          next[v] = (next[v] + 1) % copies;
        };
        if (r < 0) {
          gemv();
          continue;
        }
        const double m = cpu::measure_read_bandwidth_gbs(size_t{1} << 30, static_cast<int>(*threads), 0.3);
        int64_t calls = 0;
        const auto t0 = Clock::now();
        double el = 0;
        do {
          gemv();
          ++calls;
          el = std::chrono::duration<double>(Clock::now() - t0).count();
        } while (el < 0.3);
        bw[v].push_back(m);
        gbs[v].push_back(double(calls) * double(bytes) / el / 1e9);
        ratio[v].push_back(gbs[v].back() / m);
      }
    }
    for (size_t v = 0; v < variants.size(); ++v) {
      const Variant& var = variants[v];
      // Tile rows are named by the plan they ran: tile (auto), tile-sw (classic), tile-hw (none),
      // tile-NEAR:FAR otherwise.
      const int kernel = var.own_kernel ? var.level : cpu::tile_kernel_level(uint32_t(t), pass_tokens, var.level);
      const cpu::TilePrefetch plan = var.prefetch.value_or(cpu::tile_prefetch_auto(uint32_t(t), kernel));
      std::string path_name = var.dense ? "dense" : var.level == 0 || var.path == cpu::GgmlGemvPath::Fp32 ? "fp32" : "int8";
      if (var.tile)
        path_name = !var.prefetch                        ? "tile"
                    : plan == cpu::kTilePrefetchClassic   ? "tile-sw"
                    : plan == cpu::TilePrefetch{0, 0}     ? "tile-hw"
                    : "tile-" + std::to_string(plan.near) + ":" + std::to_string(plan.far);
      if (var.tile && kernel != var.level) path_name += " (avx2 kernel)";
      if (var.own_kernel) path_name += " (vnni)";
      std::string per;
      for (double r : ratio[v]) {
        char b[16];
        std::snprintf(b, sizeof b, "%.3f ", r);
        per += b;
      }
      const bool simd = var.tile || var.dense || (var.level > 0 && cpu::ggml_gemv_has_kernel(uint32_t(t), var.level, var.path));
      std::printf("%-6s %-7s %-22s %10.1f %10.1f %7.1f%%  %s%s\n", ti->name, isa_name(var.level), path_name.c_str(), median(bw[v]),
                  median(gbs[v]), 100.0 * median(ratio[v]), per.c_str(),
                  var.level > 0 && !simd ? "(no SIMD kernel: scalar)" : "");
      out["results"].push_back({{"type", ti->name}, {"isa", isa_name(var.level)}, {"path", path_name}, {"simd", simd},
                                {"membw_gbs", median(bw[v])}, {"gemv_gbs", median(gbs[v])},
                                {"ratio_median", median(ratio[v])}, {"ratios", ratio[v]}, {"membw_runs_gbs", bw[v]},
                                {"gemv_runs_gbs", gbs[v]}});
      if (var.tile) {
        out["results"].back()["prefetch"] = {{"near", plan.near}, {"far", plan.far}};
        out["results"].back()["kernel"] = isa_name(kernel);
      }
    }
  }
  out["threads"] = omp_get_max_threads();
  out["rows"] = rows;
  out["cols"] = cols;
  out["tokens"] = n;
  return 0;
}

}  // namespace mt::cli
