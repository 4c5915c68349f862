// Benchmarks of the routed-expert kernels (hidden from the default run: `[.bench]`), and a quick
// smoke test of the read-bandwidth probe.
//
//   ./build-kern/tests/test_kernels_expert_bench '[.bench]' -s     (all benches)
//   ./build-kern/tests/test_kernels_expert_bench 'expert decode layer*'
// Environment: MOETIER_BENCH_ROUNDS (7), MOETIER_BENCH_QUANTS (q4,q8,bf16),
// MOETIER_BENCH_THREADS (1,2), MOETIER_BENCH_POOL_MB (1536), MOETIER_BENCH_ITERS (12).
#include <catch2/catch.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/huge_buffer.h"
#include "cpu_kernels/read_bandwidth.h"

using namespace mt;
using namespace mt::cpu;

namespace {

using clk = std::chrono::steady_clock;

int env_int(const char* name, int def) {
  const char* e = std::getenv(name);
  return e && *e ? std::atoi(e) : def;
}
std::vector<std::string> env_list(const char* name, const char* def) {
  const char* e = std::getenv(name);
  std::stringstream ss(e && *e ? e : def);
  std::vector<std::string> out;
  for (std::string s; std::getline(ss, s, ',');) out.push_back(s);
  return out;
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void fill_random_expert(const ExpertGeometry& g, uint8_t* blob, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> gate(static_cast<size_t>(g.inter * g.hidden)), up(gate.size()), down(gate.size());
  for (auto* m : {&gate, &up, &down})
    for (auto& v : *m) v = nd(rng);
  pack_expert(g, gate.data(), up.data(), down.data(), blob);
}

}  // namespace

TEST_CASE("read bandwidth probe returns a plausible figure", "[kernels][expert]") {
  const double gbs = measure_read_bandwidth_gbs(size_t{64} << 20, 1, 0.02);
  REQUIRE(gbs > 0.1);
  REQUIRE(gbs < 10000.0);
}

// One MoE layer's decode at the real shape: 8 random experts of a resident pool (far larger than
// the caches) applied to one token, timed against the streaming-read bandwidth measured with the
// same thread count, interleaved round by round.
TEST_CASE("expert decode layer bandwidth vs RAM read bandwidth", "[.bench]") {
  const int rounds = env_int("MOETIER_BENCH_ROUNDS", 7), iters = env_int("MOETIER_BENCH_ITERS", 12);
  const size_t pool_bytes = static_cast<size_t>(env_int("MOETIER_BENCH_POOL_MB", 1536)) << 20;
  std::printf("kernel ISA: %s\n", std::string(expert_kernel_isa()).c_str());
  for (const std::string& qn : env_list("MOETIER_BENCH_QUANTS", "q4,q8,bf16")) {
    ExpertQuant q;
    REQUIRE(expert_quant_from_name(qn, q));
    const ExpertGeometry g{q, 7168, 2048, 32};
    const size_t B = expert_blob_layout(g).total_bytes;
    const int64_t E = std::max<int64_t>(16, static_cast<int64_t>(pool_bytes / B));
    const HugeBuffer pool_buf(B * static_cast<size_t>(E));
    uint8_t* pool = pool_buf.data();
    fill_random_expert(g, pool, 1);
    for (int64_t e = 1; e < E; ++e) std::memcpy(pool + B * e, pool, B);  // timing does not depend on values
    std::mt19937 rng(7);
    std::vector<float> x(static_cast<size_t>(g.hidden)), y(x.size());
    const int32_t tok0 = 0;
    const float wts[8] = {0.3f, 0.2f, 0.1f, 0.1f, 0.1f, 0.1f, 0.05f, 0.05f};
    auto layer = [&] {
      std::vector<int64_t> ids;
      while (ids.size() < 8) {
        const int64_t id = static_cast<int64_t>(rng() % static_cast<uint32_t>(E));
        if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
      }
      for (auto& v : x) v = static_cast<float>(static_cast<int>(rng() % 2001) - 1000) * 1e-3f;
      ExpertTask tasks[8];
      for (int i = 0; i < 8; ++i) tasks[i] = {pool + B * static_cast<size_t>(ids[i]), &tok0, &wts[i], 1};
      const auto t0 = clk::now();
      experts_ffn(g, tasks, 8, x.data(), y.data());
      return std::chrono::duration<double>(clk::now() - t0).count();
    };
    for (const std::string& ts : env_list("MOETIER_BENCH_THREADS", "1,2")) {
      const int T = std::atoi(ts.c_str());
      omp_set_num_threads(T);
      for (int i = 0; i < 3; ++i) layer();
      // Each round: ITERS layer steps bracketed by two bandwidth measurements (their mean is the
      // round's bandwidth), so that the host's drift hits both sides alike. Per round two ratios:
      // median step / bandwidth, and best step / bandwidth (like for like with the bandwidth,
      // itself the best of its passes: robust to time slices lost to other processes).
      std::vector<double> ratios, ratios_best, bws, gots;
      double bw_prev = measure_read_bandwidth_gbs(size_t{1} << 30, T, 0.1);
      for (int r = 0; r < rounds; ++r) {
        std::vector<double> times;
        for (int i = 0; i < iters; ++i) times.push_back(layer());
        const double bw_next = measure_read_bandwidth_gbs(size_t{1} << 30, T, 0.1);
        const double bw = 0.5 * (bw_prev + bw_next);
        bw_prev = bw_next;
        const double got = 8.0 * static_cast<double>(B) / median(times) / 1e9;
        const double best = 8.0 * static_cast<double>(B) / *std::min_element(times.begin(), times.end()) / 1e9;
        ratios.push_back(got / bw);
        ratios_best.push_back(best / bw);
        bws.push_back(bw);
        gots.push_back(got);
        std::printf("  %s-g32 threads=%d round %d: read bw %.1f GB/s, layer median %.2f ms = %.1f GB/s (ratio %.3f), "
                    "best %.2f ms (ratio %.3f)\n",
                    qn.c_str(), T, r, bw, median(times) * 1e3, got, got / bw,
                    *std::min_element(times.begin(), times.end()) * 1e3, best / bw);
      }
      std::printf("%s-g32 threads=%d pool=%lld experts (%.2f GB): median ratio %.3f (min %.3f max %.3f), "
                  "best-step ratio %.3f; median kernel %.1f GB/s, median read bw %.1f GB/s\n",
                  qn.c_str(), T, static_cast<long long>(E), static_cast<double>(B * E) / 1e9, median(ratios),
                  *std::min_element(ratios.begin(), ratios.end()), *std::max_element(ratios.begin(), ratios.end()),
                  median(ratios_best), median(gots), median(bws));
      std::fflush(stdout);
    }
  }
}

// Decode (GEMV) path against the oneDNN prefill path for one expert as the token count grows:
// where the prefill path starts winning is the threshold kPrefillMinTokensDefault.
TEST_CASE("expert decode vs prefill crossover", "[.bench]") {
  const int reps = env_int("MOETIER_BENCH_ROUNDS", 5);
  for (const std::string& qn : env_list("MOETIER_BENCH_QUANTS", "q4,q8,bf16")) {
    ExpertQuant q;
    REQUIRE(expert_quant_from_name(qn, q));
    const ExpertGeometry g{q, 7168, 2048, 32};
    const size_t B = expert_blob_layout(g).total_bytes;
    const HugeBuffer blob_buf(B);
    uint8_t* blob = blob_buf.data();
    fill_random_expert(g, blob, 3);
    for (int64_t n : {4, 16, 32, 48, 64, 128, 256, 512}) {
      std::vector<float> x(static_cast<size_t>(n * g.hidden), 0.01f), y(x.size()), w(static_cast<size_t>(n), 1.0f);
      auto timeit = [&](auto&& f) {
        std::vector<double> t;
        f();
        for (int i = 0; i < reps; ++i) {
          const auto t0 = clk::now();
          f();
          t.push_back(std::chrono::duration<double>(clk::now() - t0).count());
        }
        return median(t);
      };
      const double td = timeit([&] { expert_ffn_decode(g, blob, x.data(), n, w.data(), y.data()); });
      const double tp = timeit([&] { expert_ffn_prefill(g, blob, x.data(), n, w.data(), y.data()); });
      std::printf("%s n=%3lld: decode %8.2f ms  prefill %8.2f ms  (decode/prefill %.2f)\n", qn.c_str(),
                  static_cast<long long>(n), td * 1e3, tp * 1e3, td / tp);
      std::fflush(stdout);
    }
  }
}
