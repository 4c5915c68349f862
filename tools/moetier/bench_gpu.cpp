// MLA decode (one token over a 32K latent cache, 128 heads, kv_b in bf16) as GB/s against the
// device's own copy bandwidth; sparse MLA over 2048 selected rows; the V3.2 indexer's scores
// and top-2048 per token at 32K and 128K. Each call goes through the backend seam on device
// activations, timed to the device's completion; median of --runs.
#include "tools/moetier/bench_gpu.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu_kernels/cpu_backend.h"
#include "gpu_kernels/cuda_backend.h"
#include "gpu_kernels/gpu_probe.h"
#include "runtime/core/dtype.h"

namespace mt::cli {

namespace {

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

template <class F>
double time_median(int64_t runs, F&& f) {
  f();  // warm-up: scratch grows, cuBLAS picks its kernels
  std::vector<double> t;
  for (int64_t i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return median_of(t);
}

std::vector<float> randn(size_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

}  // namespace

int bench_gpu(const Args& a, nlohmann::ordered_json& out) {
  auto runs = a.get_int("runs", 20, 1, 100000);
  auto ctx = a.get_int("ctx", 32768, 2048, 1 << 20);
  if (!runs || !ctx) return std::fprintf(stderr, "error: %s\n", (!runs ? runs : ctx).error().c_str()), 2;
  gpu::CopyBandwidth copy;
  std::string err;
  if (!gpu::measure_device_copy(uint64_t{1} << 30, copy, err))
    return std::fprintf(stderr, "error: bench gpu needs a GPU: %s\n", err.c_str()), 1;
  auto made = gpu::make_cuda_backend(cpu::make_cpu_backend({}), gpu::CudaOptions{});
  if (!made.ok()) return std::fprintf(stderr, "error: %s\n", made.error().c_str()), 1;
  backend::Backend& be = **made;
  const gpu::GpuInfo info = gpu::probe_gpu();
  std::printf("bench gpu: %s, device copy %.0f GB/s (read + write; %.0f GB/s copied)\n", info.name.c_str(),
              copy.traffic_gbs, copy.copy_gbs);
  out["gpu"] = info.name;
  out["copy_traffic_gbs"] = copy.traffic_gbs;

  // DeepSeek V3 attention: 128 heads, nope 128, rope 64, v 128, latent 512; kv_b bf16.
  const int64_t H = 128, T = *ctx;
  const MlaHeadDims d{128, 64, 128, 512};
  std::mt19937 rng(1);
  std::vector<uint16_t> kvb(size_t(H * (d.nope + d.v) * d.latent));
  for (auto& w : kvb) w = f32_to_bf16(std::normal_distribution<float>(0.0f, 0.02f)(rng));
  be.load_attention_weights(0, WeightView{DType::BF16, reinterpret_cast<const uint8_t*>(kvb.data()), H * (d.nope + d.v), d.latent},
                            d);
  const int64_t T_idx = std::max<int64_t>(T, 131072);
  auto cache = be.make_cache(backend::CacheShape{1, d.latent, d.rope, 128}, T_idx);
  // Host rows as device activations.
  auto on_device = [&](const std::vector<float>& v) {
    auto b = be.alloc_activations(static_cast<int64_t>(v.size()));
    be.upload(v.data(), b->data(), b->size());
    return b;
  };
  for (int64_t p0 = 0; p0 < T_idx; p0 += 4096) {  // random latents, keys and index keys
    const int64_t n = std::min<int64_t>(4096, T_idx - p0);
    auto lat = on_device(randn(size_t(n * d.latent), rng)), kr = on_device(randn(size_t(n * d.rope), rng)),
         ik = on_device(randn(size_t(n * 128), rng));
    be.cache_store(*cache, 0, p0, n, lat->data(), kr->data());
    be.cache_store_index_key(*cache, 0, p0, n, ik->data());
  }
  auto q = on_device(randn(size_t(H * (d.nope + d.rope)), rng));
  auto o = be.alloc_activations(H * d.v);
  backend::MlaArgs m;
  m.layer = 0, m.n = 1, m.pos0 = T - 1, m.heads = H, m.dims = d, m.scale = 0.07f, m.q = q->data(), m.out = o->data();
  const double t_mla = time_median(*runs, [&] {
    be.mla_attention(*cache, m);
    gpu::synchronize(be);
  });
  const double mla_bytes = double(T) * double(d.latent + d.rope) * 2.0 + double(kvb.size()) * 2.0;
  const double mla_gbs = mla_bytes / t_mla / 1e9;
  std::printf("%-44s %9.3f ms  %7.0f GB/s  %5.1f%% of the copy traffic\n",
              ("MLA decode, 1 token, " + std::to_string(T) + " keys").c_str(), t_mla * 1e3, mla_gbs,
              100.0 * mla_gbs / copy.traffic_gbs);
  out["mla_decode"] = {{"keys", T}, {"ms", t_mla * 1e3}, {"gbs", mla_gbs}, {"fraction_of_copy", mla_gbs / copy.traffic_gbs}};

  std::vector<std::vector<int32_t>> sel(1);
  for (int32_t p = 0; p < 2048; ++p) sel[0].push_back(static_cast<int32_t>(int64_t(p) * (T / 2048)));
  m.selected = &sel;
  const double t_sparse = time_median(*runs, [&] {
    be.mla_attention(*cache, m);
    gpu::synchronize(be);
  });
  std::printf("%-44s %9.3f ms\n", "MLA sparse, 1 token, 2048 selected keys", t_sparse * 1e3);
  out["mla_sparse_2048_ms"] = t_sparse * 1e3;

  // The V3.2 indexer: 64 heads of 128, top-2048.
  for (int64_t keys : {T, T_idx}) {
    auto iq = on_device(randn(size_t(64 * 128), rng)), hw = on_device(randn(64, rng));
    backend::IndexerArgs ia;
    ia.layer = 0, ia.n = 1, ia.pos0 = keys - 1, ia.heads = 64, ia.dim = 128, ia.top_k = 2048;
    ia.scale = 0.01f, ia.q = iq->data(), ia.head_weight = hw->data();
    std::vector<std::vector<int32_t>> s;
    const double t = time_median(*runs, [&] { be.indexer_topk(*cache, ia, s); });
    std::printf("%-44s %9.3f ms\n", ("indexer + top-2048, 1 token, " + std::to_string(keys) + " keys").c_str(), t * 1e3);
    out["indexer_ms_" + std::to_string(keys)] = t * 1e3;
  }
  return 0;
}

}  // namespace mt::cli
