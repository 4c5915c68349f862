// moetier bench: the machine's own yardsticks and our kernels measured against them, in the
// same run and interleaved (shared machines drift), reported as medians with ratios.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>
#include <omp.h>

#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/huge_buffer.h"
#include "cpu_kernels/read_bandwidth.h"
#include "offload/blob_loader.h"
#include "offload/disk_bandwidth.h"
#include "offload/expert_store.h"
#include "runtime/engine/engine.h"
#include "runtime/core/process_memory.h"
#include "runtime/model/step_profile.h"
#include "tools/moetier/bench_gguf.h"
#include "tools/moetier/bench_gpu.h"
#include "tools/moetier/bench_threads.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/decode_run.h"
#include "tools/moetier/expert_flags.h"
#include "tools/moetier/median.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

const char* kUsage = R"(usage: moetier bench membw|moe|io|decode|gpu|gguf [options] [--json FILE]

  membw    RAM read bandwidth of this machine (streaming reads, all threads)
  moe      one MoE layer's decode at the real expert shape (hidden 7168, experts 2048 wide,
           top-8) on packed experts resident in RAM: achieved GB/s and its ratio to membw,
           measured interleaved; and prefill tokens/s through the grouped path
  io       expert streaming GB/s from a packed store (io_uring, O_DIRECT) and its ratio to the
           disk's sequential O_DIRECT read bandwidth at the same block size and queue depth
  decode   end-to-end decode tokens/s of a model with a RAM budget: cache hit rate, prefetch accuracy
  gpu      the CUDA backend at DeepSeek V3's attention shapes: MLA decode GB/s over the device's
           copy bandwidth (--ctx keys), sparse MLA, indexer + top-2048 at --ctx and 128K keys
  gguf     the GGUF block GEMV (llama.cpp's Q8_0 / K-quant blocks as stored) at a routed
           expert's shape, 8-bit (default) and fp32 activations: GB/s and its ratio to membw,
           measured interleaved, per ISA (--type Q4_K,Q6_K,Q8_0, --batch N tokens per pass)

options:
  --runs N            interleaved measurement pairs (median reported)                   [7]
  --threads N         OpenMP threads                                            [all cores]
  --quant q4|q8|bf16  expert format for `moe`                                          [q4]
  --group N           quantisation group for `moe`                                     [32]
  --isa NAME          cap the kernels' ISA for `moe` and `decode`: scalar, avx2, avx512
                                                        [MOETIER_ISA, else the CPU's best]
  --experts N         distinct resident experts for `moe` (working set >> caches)       [64]
  --tokens N          prefill tokens for `moe`                                        [256]
  --model PATH        packed store for `io`; checkpoint, store or GGUF file for `decode`
  --queue-depth N     reads in flight for `io`                                         [16]
  --chunk-kb N        size of each read for `io` (blobs are split)        [the loader's, 1024]
  --ram-budget SIZE   expert RAM budget for `decode` (also --cache-policy, --no-prefetch,
                      --pread, as for generate)                                [all in RAM]
  --backend NAME      backend for `decode`: cpu or reference                          [cpu]
  --gpu on|off        `decode` on the CUDA backend (EXPERIMENTAL), --gpu-vram SIZE, --gpu-cache T, --gpu-graphs on|off [off]
  --gguf-tiles on|off `decode` from a GGUF: its Q2_K..Q6_K, Q8_0 matrices as 16-row tiles (as for generate) [on]
  -n N                decode tokens for `decode`                                       [32]
  --prompt-tokens N   prompt length for `decode` (its prefill is timed too)           [16]
  --batch N           sequences decoded together in one step by `decode` (batched
                      decode: each weight read once per step); tokens/s counts all  [1]
  --ctx N             keys for `gpu`                                               [32768]
  --type LIST         GGUF types for `gguf`: Q8_0, Q2_K..Q6_K, F32, F16, BF16 [Q4_K,Q6_K,Q8_0]
  --tiles-only        `gguf`: only the row-tile rows (what generate runs)
  --tile-prefetch L   `gguf` tile rows' software prefetch, a row each, interleaved: auto (as
                      generate: per type and CPU), on (2 KB to L1 + 8 KB to L2), off (the
                      hardware prefetchers alone), both (on,off), NEAR:FAR (bytes) [auto]
  --json FILE         also write the results as JSON
)";

double seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Short samples of the machine's RAM read bandwidth (the kernels' yardstick, which keeps its
// 1 GiB buffer between calls), for interleaving with what is measured against it.
struct MembwSampler {
  int threads = 0;
  explicit MembwSampler(int t) : threads(t) {}
  double sample(double min_seconds) { return cpu::measure_read_bandwidth_gbs(size_t(1) << 30, threads, min_seconds); }
};

int bench_membw(const Args& a, json& out) {
  auto runs = a.get_int("runs", 7, 1, 1000);
  auto threads = a.get_int("threads", 0, 0, 4096);
  if (!runs || !threads) return std::fprintf(stderr, "error: %s\n", (!runs ? runs : threads).error().c_str()), 2;
  MembwSampler m(static_cast<int>(*threads));
  std::vector<double> v;
  for (int64_t r = 0; r < *runs; ++r) v.push_back(m.sample(0.5));
  std::printf("%-28s %10s\n", "measure", "GB/s");
  std::printf("%-28s %10.1f\n", "RAM read bandwidth (median)", median(v));
  out["membw_gbs"] = median(v);
  out["membw_runs"] = v;
  out["threads"] = *threads > 0 ? *threads : omp_get_max_threads();
  return 0;
}

int bench_moe(const Args& a, json& out) {
  auto kcfg = expert_kernel_config(a);
  if (!kcfg) return std::fprintf(stderr, "error: %s\n", kcfg.error().c_str()), 2;
  cpu::ExpertWorkspace ws;  // reused, as the runtime does
  auto runs = a.get_int("runs", 7, 1, 1000);
  auto threads = apply_bench_threads(a);
  auto group = a.get_int("group", 32, 1, 1 << 20);
  auto n_experts = a.get_int("experts", 64, 8, 256);
  auto tokens = a.get_int("tokens", 256, 1, 1 << 16);
  for (auto* r : {&runs, &threads, &group, &n_experts, &tokens})
    if (!*r) return std::fprintf(stderr, "error: %s\n", r->error().c_str()), 2;
  ExpertGeometry g{ExpertQuant::Q4, 7168, 2048, *group};
  const std::string q = a.get_or("quant", "q4");
  if (!expert_quant_from_name(q, g.quant)) return std::fprintf(stderr, "error: --quant must be q4, q8 or bf16\n"), 2;
  std::string why;
  if (!expert_geometry_valid(g, &why)) return std::fprintf(stderr, "error: %s\n", why.c_str()), 2;
  const size_t blob = expert_blob_layout(g).total_bytes;

  // One expert packed from random weights, copied to N resident slots: every layer step
  // reads 8 distinct blobs from RAM (the working set is far larger than the caches).
  std::fprintf(stderr, "bench moe: packing %lld experts of %s (%s)\n", static_cast<long long>(*n_experts),
               format_bytes(double(blob)).c_str(), q.c_str());
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> gate(7168 * 2048), up(gate.size()), down(gate.size());
  for (auto* m : {&gate, &up, &down})
    for (auto& x : *m) x = nd(rng);
  const size_t total = blob * static_cast<size_t>(*n_experts);
  const cpu::HugeBuffer blob_buf(total);
  uint8_t* blobs = blob_buf.data();
  cpu::pack_expert(g, gate.data(), up.data(), down.data(), blobs);
  for (int64_t e = 1; e < *n_experts; ++e) std::memcpy(blobs + e * blob, blobs, blob);

  MembwSampler membw(static_cast<int>(*threads));
  std::vector<float> x(7168), y(7168);
  for (auto& v : x) v = nd(rng) * 50.0f;
  const float w1 = 0.3f;
  const int32_t tok0 = 0;
  auto layer_step = [&]() {  // top-8 distinct experts, one token
    int32_t chosen[8];
    for (int k = 0; k < 8;) {
      const auto e = static_cast<int32_t>(rng() % static_cast<uint64_t>(*n_experts));
      if (std::find(chosen, chosen + k, e) == chosen + k) chosen[k++] = e;
    }
    cpu::ExpertTask tasks[8];
    for (int k = 0; k < 8; ++k) tasks[k] = cpu::ExpertTask{blobs + size_t(chosen[k]) * blob, &tok0, &w1, 1};
    cpu::experts_ffn(g, tasks, 8, x.data(), y.data(), *kcfg, &ws);
  };
  for (int i = 0; i < 3; ++i) layer_step();  // warm up threads and code

  std::vector<double> bw, moe_gbs, ratio;
  for (int64_t r = 0; r < *runs; ++r) {
    const double m = membw.sample(0.3);
    int64_t steps = 0;
    const auto t0 = Clock::now();
    do {
      layer_step();
      ++steps;
    } while (seconds(t0) < 0.3);
    const double gbs = double(steps) * 8.0 * double(blob) / seconds(t0) / 1e9;
    bw.push_back(m);
    moe_gbs.push_back(gbs);
    ratio.push_back(gbs / m);
  }

  // Prefill: T tokens each routed to 8 random experts, grouped per expert.
  const int64_t T = *tokens;
  std::vector<float> xp(static_cast<size_t>(T * 7168)), yp(xp.size());
  for (auto& v : xp) v = nd(rng) * 50.0f;
  std::vector<std::vector<int32_t>> toks(static_cast<size_t>(*n_experts));
  std::vector<std::vector<float>> wts(static_cast<size_t>(*n_experts));
  for (int64_t t = 0; t < T; ++t)
    for (int k = 0; k < 8; ++k) {
      const auto e = static_cast<size_t>((t * 8 + k) * 2654435761u % static_cast<uint64_t>(*n_experts));
      toks[e].push_back(static_cast<int32_t>(t));
      wts[e].push_back(0.25f);
    }
  std::vector<cpu::ExpertTask> ptasks;
  for (int64_t e = 0; e < *n_experts; ++e)
    if (!toks[static_cast<size_t>(e)].empty())
      ptasks.push_back({blobs + size_t(e) * blob, toks[static_cast<size_t>(e)].data(), wts[static_cast<size_t>(e)].data(),
                        static_cast<int64_t>(toks[static_cast<size_t>(e)].size())});
  std::vector<double> prefill;
  for (int r = 0; r < std::max<int64_t>(3, *runs / 2); ++r) {
    const auto t0 = Clock::now();
    cpu::experts_ffn(g, ptasks.data(), static_cast<int64_t>(ptasks.size()), xp.data(), yp.data(), *kcfg, &ws);
    prefill.push_back(double(T) / seconds(t0));
  }

  std::printf("bench moe: %s experts (group %lld), hidden 7168, width 2048, top-8, %lld resident, %d threads, ISA %s\n",
              q.c_str(), static_cast<long long>(*group), static_cast<long long>(*n_experts), omp_get_max_threads(),
              std::string(cpu::expert_kernel_isa(*kcfg)).c_str());
  std::printf("%-40s %10s\n", "measure (median of interleaved runs)", "value");
  std::printf("%-40s %10.1f\n", "RAM read bandwidth, GB/s", median(bw));
  std::printf("%-40s %10.1f\n", "MoE layer decode, GB/s of expert weights", median(moe_gbs));
  std::printf("%-40s %9.1f%%\n", "MoE decode / RAM bandwidth", 100.0 * median(ratio));
  std::printf("%-40s %10.3f\n", "MoE layer decode time, ms", 8.0 * double(blob) / median(moe_gbs) / 1e6);
  std::printf("%-40s %10.0f\n", "prefill tokens/s (one layer)", median(prefill));
  out["quant"] = q;
  out["group"] = *group;
  out["threads"] = omp_get_max_threads();
  out["isa"] = std::string(cpu::expert_kernel_isa(*kcfg));
  out["blob_bytes"] = blob;
  out["membw_gbs"] = median(bw);
  out["moe_decode_gbs"] = median(moe_gbs);
  out["ratio_median"] = median(ratio);
  out["ratios"] = ratio;
  out["prefill_tokens_per_s"] = median(prefill);
  return 0;
}

int bench_io(const Args& a, json& out) {
  auto runs = a.get_int("runs", 5, 1, 1000);
  auto qd = a.get_int("queue-depth", 16, 1, 4096);
  for (auto* r : {&runs, &qd})
    if (!*r) return std::fprintf(stderr, "error: %s\n", r->error().c_str()), 2;
  if (!a.has("model")) return std::fprintf(stderr, "error: bench io needs --model PACKED_STORE\n"), 2;
  auto store = offload::ExpertStore::open(*a.get("model"));
  if (!store) return std::fprintf(stderr, "error: %s\n", store.error().c_str()), 1;
  const auto& m = store->manifest();
  offload::LoaderOptions lo;
  lo.queue_depth = static_cast<int>(*qd);
  auto chunk = a.get_int("chunk-kb", 0, 0, 1 << 22);
  if (!chunk) return std::fprintf(stderr, "error: %s\n", chunk.error().c_str()), 2;
  // The loader's read size (its default unless --chunk-kb); the yardstick reads at that size too.
  if (*chunk > 0) lo.chunk_bytes = static_cast<uint64_t>(*chunk) * 1024;
  const uint64_t block = std::min<uint64_t>(lo.chunk_bytes, m.blob_bytes);
  lo.verify_checksums = false;  // measure the reads; checksums are verified at first real load
  auto loader = offload::make_blob_loader(*store, lo);
  if (!loader) return std::fprintf(stderr, "error: %s\n", loader.error().c_str()), 1;
  // Buffers for up to 2 GiB of blobs in flight / landing.
  const size_t n_buf = std::max<size_t>(1, std::min<size_t>(m.blobs.size(), (size_t(2) << 30) / m.blob_bytes));
  std::vector<offload::AlignedBuffer> bufs;
  for (size_t i = 0; i < n_buf; ++i) bufs.emplace_back(m.blob_bytes);
  // Yardstick and our streaming read the same file (the same bytes, so whatever caches sit
  // below this machine's disk treat both alike).
  const uint32_t file_index = m.blobs.front().file;
  const auto file = store->file_path(file_index);
  std::vector<offload::BlobInfo> blobs;
  for (const auto& b : m.blobs)
    if (b.file == file_index) blobs.push_back(b);

  std::vector<double> disk, ours, ratio;
  // Run -1 is a warm-up pass (not counted): whatever caches sit below this machine's disk then
  // hold the file equally for both measurements. Each counted run brackets our streaming
  // between two yardstick samples and compares it with their mean.
  for (int64_t r = -1; r < *runs; ++r) {
    Result<double> d = offload::measure_sequential_read_gbs(file, block, static_cast<int>(*qd), 1.0);
    if (!d) return std::fprintf(stderr, "error: %s\n", d.error().c_str()), 1;
    const double before = *d;
    // Stream every blob of the store through the loader, in file order, keeping n_buf loads
    // outstanding: a finished buffer is refilled at once (sliding window, no drain bubbles).
    std::mutex mu;
    std::condition_variable cv;
    std::vector<size_t> free_bufs;
    std::atomic<bool> failed{false};
    for (size_t i = 0; i < n_buf; ++i) free_bufs.push_back(i);
    const auto t0 = Clock::now();
    size_t issued = 0, completed = 0;
    while (completed < blobs.size()) {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return !free_bufs.empty() || completed == issued; });
      while (!free_bufs.empty() && issued < blobs.size() && seconds(t0) < 3.0) {
        const size_t i = free_bufs.back();
        free_bufs.pop_back();
        const auto& b = blobs[issued++];
        lk.unlock();
        (*loader)->load_async(b.layer, b.expert, bufs[i].data(), [&, i](Status s) {
          if (!s) failed = true;
          std::lock_guard<std::mutex> g(mu);
          free_bufs.push_back(i);
          ++completed;
          cv.notify_one();
        });
        lk.lock();
      }
      if (completed == issued && (issued == blobs.size() || seconds(t0) >= 3.0)) break;
    }
    const uint64_t bytes = completed * m.blob_bytes;
    const double stream_s = seconds(t0);
    d = offload::measure_sequential_read_gbs(file, block, static_cast<int>(*qd), 1.0);
    if (!d) return std::fprintf(stderr, "error: %s\n", d.error().c_str()), 1;
    if (r < 0) continue;
    const double yardstick = 0.5 * (before + *d);
    if (failed) return std::fprintf(stderr, "error: a read failed while streaming %s\n", a.get("model")->c_str()), 1;
    const double gbs = double(bytes) / stream_s / 1e9;
    disk.push_back(yardstick);
    ours.push_back(gbs);
    ratio.push_back(gbs / yardstick);
  }
  std::printf("bench io: %s, %zu blobs of %s, reads of %s, queue depth %lld, backend %s\n", file.c_str(),
              blobs.size(), format_bytes(double(m.blob_bytes)).c_str(), format_bytes(double(block)).c_str(),
              static_cast<long long>(*qd), (*loader)->backend());
  std::printf("%-44s %10s\n", "measure (median of interleaved runs)", "value");
  std::printf("%-44s %10.2f\n", "disk sequential O_DIRECT read, GB/s", median(disk));
  std::printf("%-44s %10.2f\n", "expert streaming, GB/s", median(ours));
  std::printf("%-44s %9.1f%%\n", "expert streaming / sequential read", 100.0 * median(ratio));
  std::printf("note: a file read recently may be served from the host's cache below this VM's disk\n");
  out["disk_seq_gbs"] = median(disk);
  out["stream_gbs"] = median(ours);
  out["ratio_median"] = median(ratio);
  out["ratios"] = ratio;
  out["backend"] = (*loader)->backend();
  return 0;
}

int bench_decode(const Args& a, json& out) {
  auto n = a.get_int("n-predict", 32, 1, 1 << 20);
  if (!n) return std::fprintf(stderr, "error: %s\n", n.error().c_str()), 2;
  auto np = a.get_int("prompt-tokens", 16, 1, 1 << 16);
  if (!np) return std::fprintf(stderr, "error: %s\n", np.error().c_str()), 2;
  if (!a.has("model")) return std::fprintf(stderr, "error: bench decode needs --model DIR\n"), 2;
  auto batch = a.get_int("batch", 1, 1, 256);
  if (!batch) return std::fprintf(stderr, "error: %s\n", batch.error().c_str()), 2;
  auto threads = apply_bench_threads(a);  // the decode and the RAM yardstick alike
  if (!threads) return std::fprintf(stderr, "error: %s\n", threads.error().c_str()), 2;
  const int64_t B = *batch;
  auto engine = open_engine_from_flags(a, *n + *np + 48);
  if (!engine) return std::fprintf(stderr, "error: %s\n", engine.error().c_str()), 1;
  Engine& e = **engine;
  auto run = run_decode(e, *np, *n, B);
  if (!run) return std::fprintf(stderr, "error: %s\n", run.error().c_str()), 1;
  const StepProfile& prof = run->profile;
  const double prefill_s = run->prefill_seconds, sampling_s = run->sampling_seconds;
  const double tps = run->decode_tokens_per_s();
  std::printf("bench decode: %s (backend %s, %d threads)\n", a.get("model")->c_str(), e.backend_name(), omp_get_max_threads());
  out["threads"] = omp_get_max_threads();
  std::printf("%-36s %10.2f\n", ("prefill tokens/s (" + std::to_string(*np) + " tokens)").c_str(), double(*np) / prefill_s);
  std::printf("%-36s %10.2f\n", B == 1 ? "decode tokens/s" : ("decode tokens/s (" + std::to_string(B) + " sequences)").c_str(), tps);
  out["prefill_tokens_per_s"] = double(*np) / prefill_s;
  out["decode_tokens_per_s"] = tps;
  out["batch"] = B;

  const double per_tok = double(prof.total_weight_bytes()) / double(*n * B);
  std::printf("\n%-24s %10s %7s %12s %8s\n", "part (per decoded token)", "ms", "share", "weights MB", "GB/s");
  json parts = json::object();
  const double total_s = prof.total_seconds() + sampling_s;
  auto row = [&](const char* name, double sec, double bytes) {
    const double ms = 1e3 * sec / double(*n * B), mb = bytes / 1e6 / double(*n * B);
    char gbs[32] = "-";
    if (bytes > 0 && sec > 0) std::snprintf(gbs, sizeof gbs, "%.1f", bytes / sec / 1e9);
    std::printf("%-24s %10.3f %6.1f%% %12.1f %8s\n", name, ms, 100.0 * sec / total_s, mb, gbs);
    parts[name] = {{"ms_per_token", ms}, {"weight_mb_per_token", mb}};
  };
  for (int p = 0; p < kModelParts; ++p)
    if (prof.seconds[size_t(p)] > 0 || prof.weight_bytes[size_t(p)] > 0)
      row(model_part_name(ModelPart(p)), prof.seconds[size_t(p)], double(prof.weight_bytes[size_t(p)]));
  row("sampling (argmax)", sampling_s, 0);
  out["parts"] = parts;
  const double rss = double(process_rss_bytes()), peak_rss = double(process_peak_rss_bytes());
  // RAM bandwidth of this machine measured now, in the same run (after decode, so that its
  // buffer is not in the RSS above).
  MembwSampler mb(static_cast<int>(*threads));
  std::vector<double> bw;
  for (int r = 0; r < 3; ++r) bw.push_back(mb.sample(0.5));
  const double membw = median(bw), achieved = per_tok * tps / 1e9;
  std::printf("\n%-36s %10.3f\n", "GB of weights read per token", per_tok / 1e9);
  std::printf("%-36s %10.1f\n", "achieved GB/s (whole token)", achieved);
  std::printf("%-36s %10.1f\n", "RAM read bandwidth now, GB/s", membw);
  std::printf("%-36s %9.1f%%\n", "achieved / RAM bandwidth", 100.0 * achieved / membw);
  out["gb_per_token"] = per_tok / 1e9;
  out["achieved_gbs"] = achieved;
  out["membw_gbs"] = membw;
  out["bandwidth_fraction"] = achieved / membw;
  if (const ExpertScheduler* pe = e.expert_scheduler(); pe && run->experts) {
    const ExpertSchedulerStats& s = *run->experts;
    std::printf("%-36s %9.1f%%\n", "expert cache hit rate", 100.0 * s.cache.hit_rate());
    std::printf("%-36s %10.2f\n", "GB read from disk per token", run->disk_bytes_per_token() / 1e9);
    std::printf("%-36s %9.1f%%\n", "prefetch precision", 100.0 * s.prefetch_precision());
    std::printf("%-36s %9.1f%%\n", "prefetch recall", 100.0 * s.prefetch_recall());
    std::printf("%-36s %10s\n", "experts", s.all_resident ? "all in RAM" : pe->io_backend());
    out["hit_rate"] = s.cache.hit_rate();
    out["disk_gb_per_token"] = run->disk_bytes_per_token() / 1e9;
    out["prefetch_precision"] = s.prefetch_precision();
    out["prefetch_recall"] = s.prefetch_recall();
    out["all_resident"] = s.all_resident;
    std::printf("%-36s %llu / %llu / %llu / %llu\n", "expert uses: VRAM / RAM / NVMe hit / miss",
                static_cast<unsigned long long>(s.uses_vram), static_cast<unsigned long long>(s.uses_ram),
                static_cast<unsigned long long>(s.uses_nvme_hit), static_cast<unsigned long long>(s.uses_nvme_miss));
    out["uses"] = {{"vram", s.uses_vram}, {"ram", s.uses_ram}, {"nvme_hit", s.uses_nvme_hit}, {"nvme_miss", s.uses_nvme_miss}};
    if (s.vram_busy_s > 0) {  // a GPU ran the VRAM tier beside the CPU tiers
      std::printf("%-36s %10.3f\n", "VRAM tier: device ms per token", 1e3 * s.vram_busy_s / double(*n * B));
      std::printf("%-36s %10.3f\n", "CPU tiers beside it: ms per token", 1e3 * s.hybrid_cpu_s / double(*n * B));
      std::printf("%-36s %10.3f\n", "waited for the device: ms per token", 1e3 * s.vram_wait_s / double(*n * B));
      std::printf("%-36s %9.1f%%\n", "CPU expert time hidden behind GPU", 100.0 * s.cpu_hidden_fraction());
      out["hybrid"] = {{"device_ms_per_token", 1e3 * s.vram_busy_s / double(*n * B)},
                       {"cpu_ms_per_token", 1e3 * s.hybrid_cpu_s / double(*n * B)},
                       {"wait_ms_per_token", 1e3 * s.vram_wait_s / double(*n * B)},
                       {"cpu_hidden_fraction", s.cpu_hidden_fraction()}};
    }
  }
  out["rss_bytes"] = rss;
  auto ram = e.ram_accounting();
  if (!ram) return std::fprintf(stderr, "error: %s\n", ram.error().c_str()), 1;
  std::printf("\nRAM the runtime holds (mapped weights excluded):\n%s", ram->report().c_str());
  if (const TierBudget* vram = e.vram_accounting()) std::printf("\nVRAM the CUDA backend holds:\n%s", vram->report().c_str());
  if (gpu::GraphPolicyStats g; e.graph_stats(g)) {
    std::printf("%-36s %lld eager / %lld as graphs (%lld updated, %lld instantiated, %lld failed, %lld back-offs)\n",
                "attention blocks", static_cast<long long>(g.eager), static_cast<long long>(g.captured),
                static_cast<long long>(g.updated), static_cast<long long>(g.instantiated),
                static_cast<long long>(g.failed), static_cast<long long>(g.backoffs));
    out["attention_regions"] = {{"eager", g.eager},         {"graphs", g.captured},   {"updated", g.updated},
                                {"instantiated", g.instantiated}, {"failed", g.failed}, {"backoffs", g.backoffs}};
  }
  const double accounted = double(ram->used() + e.mapped_weight_bytes());
  std::printf("%-36s %10s\n", "mapped weight files", format_bytes(double(e.mapped_weight_bytes())).c_str());
  std::printf("%-36s %10s  (%.1f%% of accounted: runtime + weight files)\n", "process RSS after decode",
              format_bytes(rss).c_str(), 100.0 * rss / accounted);
  std::printf("%-36s %10s  (%.2f GB)\n", "peak RSS (VmHWM)", format_bytes(peak_rss).c_str(), peak_rss / 1e9);
  out["ram_accounted_bytes"] = ram->used();
  out["mapped_weight_bytes"] = e.mapped_weight_bytes();
  out["rss_over_accounted"] = rss / accounted;
  out["peak_rss_bytes"] = peak_rss;
  return 0;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  std::vector<FlagSpec> flags = {{"runs"},        {"threads"},  {"quant"}, {"group"},  {"batch"},
                                 {"experts"},     {"tokens"},   {"model"}, {"queue-depth"},
                                 {"chunk-kb"},    {"n-predict", true, 'n'}, {"prompt-tokens"}, {"ctx"}, {"type"}, {"tiles-only", false}, {"tile-prefetch"},
                                 {"json"}, {"help", false}};
  add_expert_streaming_flags(flags);
  auto parsed = Args::parse(argc, argv, flags, "bench");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help") || a.positional().empty()) return std::fputs(kUsage, a.has("help") ? stdout : stderr), a.has("help") ? 0 : 2;
  const std::string what = a.positional()[0];
  json out;
  out["bench"] = what;
  int rc;
  if (what == "membw") rc = bench_membw(a, out);
  else if (what == "moe") rc = bench_moe(a, out);
  else if (what == "io") rc = bench_io(a, out);
  else if (what == "decode") rc = bench_decode(a, out);
  else if (what == "gpu") rc = bench_gpu(a, out);
  else if (what == "gguf") rc = bench_gguf(a, out);
  else return std::fprintf(stderr, "error: unknown benchmark '%s' (membw, moe, io, decode, gpu, gguf)\n", what.c_str()), 2;
  if (rc == 0 && a.has("json")) {
    FILE* f = std::fopen(a.get("json")->c_str(), "w");
    if (!f) return std::fprintf(stderr, "error: cannot write %s\n", a.get("json")->c_str()), 1;
    std::fprintf(f, "%s\n", out.dump(2).c_str());
    std::fclose(f);
  }
  return rc;
}

}  // namespace mt::cli
