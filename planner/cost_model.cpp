#include "planner/cost_model.h"

#include "planner/dense_format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace mt::planner {

namespace {

// Decode kernels on a GPU reach about this share of the device's read bandwidth (FlashMLA
// reports ~3000 of 3350 GB/s on H800; small GEMVs do worse), and GEMMs about half of peak.
constexpr double kGpuBandwidthEfficiency = 0.75;
constexpr double kGpuGemmEfficiency = 0.5;
// Per MoE layer with CPU experts: hidden state to the host, the result back, two event waits.
constexpr double kSyncSecondsPerLayer = 30e-6;

}  // namespace

CostRates cost_rates(const CostInputs& in) {
  const MachineProfile& m = in.machine;
  CostRates r;
  // fp8 experts have no CPU kernel yet: costed as bf16 streaming (the same order of bytes per
  // weight after dequantisation), which docs/planner.md states.
  const std::string fmt = in.expert_format == "fp8" ? "bf16" : in.expert_format;
  const KernelRate* k = m.kernel(fmt);
  const KernelRate* kb = m.kernel("bf16");
  r.cpu_expert_gbs = k && k->decode_gbs > 0 ? k->decode_gbs : 0.85 * m.ram_read_gbs;
  r.cpu_expert_gflops = k && k->prefill_gflops > 0 ? k->prefill_gflops : 20.0 * std::max(1, m.physical_cores);
  r.cpu_gemm_gflops = kb && kb->prefill_gflops > 0 ? kb->prefill_gflops : r.cpu_expert_gflops;
  r.cpu_dense_fp8_gbs = m.dense_fp8_gbs > 0 ? m.dense_fp8_gbs : 0.5 * m.ram_read_gbs;
  r.cpu_dense_bf16_gbs = m.dense_bf16_gbs > 0 ? m.dense_bf16_gbs : 0.5 * m.ram_read_gbs;
  r.cpu_attention_gflops = m.attention_gflops > 0 ? m.attention_gflops : 0.25 * r.cpu_gemm_gflops;
  // Packed dense weights: the backend's measured rate over attention and shared-expert shapes,
  // else the expert kernel's (the same kernels on longer rows).
  const double packed = in.dense_format == "q4" ? m.dense_q4_gbs : m.dense_q8_gbs;
  const KernelRate* kd = m.kernel(in.dense_format == "q4" ? "q4" : "q8");
  r.cpu_dense_packed_gbs = packed > 0 ? packed : kd && kd->decode_gbs > 0 ? kd->decode_gbs : r.cpu_expert_gbs;
  // A GGUF's types at their own kernels' rates where the profile measured them.
  r.cpu_expert_block_gbs = r.cpu_expert_gbs;
  if (!in.expert_types.empty()) {
    // The types' rates count blocks, expert_bytes a blob (expert_type_bytes): the mix is made in
    // blocks per second and turned into blob bytes per second. The stand-in rate is a blob's (it
    // streams the blob's bytes), so it enters the mix in block terms.
    const double blob_per_block =
        in.expert_type_bytes > 0 && in.expert_bytes > 0 ? double(in.expert_bytes) / in.expert_type_bytes : 1.0;
    const MixedRate e = mixed_kernel_rate(m, in.expert_types, r.cpu_expert_gbs / blob_per_block, r.cpu_expert_gflops);
    r.cpu_expert_block_gbs = e.decode_gbs;
    r.cpu_expert_gbs = e.decode_gbs * blob_per_block;
    r.cpu_expert_gflops = e.prefill_gflops;
  }
  if (!in.dense_types.empty() && (in.dense_format == "q4" || in.dense_format == "q8")) {
    // Their prompts run through the same kernels (not the bf16 GEMM): prefill at those rates too.
    const MixedRate d = mixed_kernel_rate(m, in.dense_types, r.cpu_dense_packed_gbs, r.cpu_gemm_gflops);
    r.cpu_dense_packed_gbs = d.decode_gbs;
    r.cpu_gemm_gflops = d.prefill_gflops;
  }
  r.disk_gbs = m.disk_read_gbs;
  r.disk_cpu_s_per_gb = m.disk_cpu_s_per_gb;
  r.gpu = in.use_gpu && m.gpu.present;
  if (r.gpu) {
    r.gpu_gbs = kGpuBandwidthEfficiency * (m.gpu.hbm_gbs > 0 ? m.gpu.hbm_gbs : 1000.0);
    r.gpu_gflops = kGpuGemmEfficiency * 1000.0 * (m.gpu.gemm_tflops > 0 ? m.gpu.gemm_tflops : 100.0);
  }
  return r;
}

MixedRate mixed_kernel_rate(const MachineProfile& m, const std::map<std::string, TypeShare>& types,
                            double fallback_gbs, double fallback_gflops) {
  MixedRate r{fallback_gbs, fallback_gflops, {}};
  double bytes = 0, params = 0, seconds = 0, flop_seconds = 0;  // per GB / per GFLOP of the whole
  bool no_gbs = false, no_gflops = false;  // a share with no rate at all: the mix is unknown
  for (const auto& [name, share] : types) {
    const KernelRate* k = m.kernel(name);
    const bool measured = k && k->decode_gbs > 0;
    if (!measured) r.unmeasured.push_back(name);
    const double gbs = measured ? k->decode_gbs : fallback_gbs;
    const double gflops = k && k->prefill_gflops > 0 ? k->prefill_gflops : fallback_gflops;
    bytes += share.bytes;
    params += share.params;
    if (gbs > 0) seconds += share.bytes / gbs;
    else no_gbs = true;
    if (gflops > 0) flop_seconds += share.params / gflops;
    else no_gflops = true;
  }
  if (bytes > 0 && seconds > 0) r.decode_gbs = no_gbs ? fallback_gbs : bytes / seconds;
  if (params > 0 && flop_seconds > 0) r.prefill_gflops = no_gflops ? fallback_gflops : params / flop_seconds;
  return r;
}

namespace {

// Bytes of weights one token streams through each part of a layer, as stored for the GPU and
// the CPU reference path (FP8 linears with block scales, BF16 router and head).
struct LayerBytes {
  double fp8 = 0;      // attention, indexer, shared expert or dense FFN
  double bf16 = 0;     // router, norms
  double params = 0;   // the same, in parameters (prefill flops = 2 x params per token)
};

LayerBytes layer_bytes(const ModelSizes& s, bool moe) {
  LayerBytes b;
  b.fp8 = double(s.attention.fp8_bytes + s.indexer.fp8_bytes + (moe ? s.shared_expert.fp8_bytes : s.dense_ffn.fp8_bytes));
  b.bf16 = double(s.layer_norms.fp8_bytes + (moe ? s.router.fp8_bytes : 0));
  b.params = double(s.attention.params + s.indexer.params + (moe ? s.shared_expert.params + s.router.params
                                                                   : s.dense_ffn.params));
  return b;
}

// Attention over `ctx` cached tokens for one query, absorbed MLA: per head, the query is
// absorbed into the latent space (nope x R), scored against R + rope per key, values summed
// in R and expanded back (R x v).
double attention_flops(const ModelConfig& c, double ctx) {
  const double R = double(c.kv_lora_rank), H = double(c.num_attention_heads);
  const double absorb = 2.0 * double(c.qk_nope_head_dim) * R + 2.0 * R * double(c.v_head_dim);
  const double per_key = 2.0 * (R + double(c.qk_rope_head_dim)) + 2.0 * R;
  double flops = H * (absorb + ctx * per_key);
  if (c.arch == ModelArch::V32)  // indexer: every key scored by every indexer head
    flops += double(c.index_n_heads) * 2.0 * double(c.index_head_dim) * ctx;
  return flops;
}

// Latent-cache bytes one decode query reads on the GPU (bf16 cache; indexer keys in FP8).
double kv_read_bytes(const ModelConfig& c, double fill, double attended) {
  double b = attended * double(c.kv_lora_rank + c.qk_rope_head_dim) * 2.0;
  if (c.arch == ModelArch::V32) b += fill * double(c.index_head_dim + 4);
  return b;
}

}  // namespace

double expert_use_probability(double f, double tokens) { return 1.0 - std::pow(1.0 - std::min(1.0, f), tokens); }

double cache_hit_rate(const std::vector<double>& p, double slots, std::vector<double>* per_item, double one_off) {
  if (per_item) per_item->assign(p.size(), 1.0);
  double live = 0;
  for (double x : p) live += x > 0;
  if (slots >= live || live == 0) return 1.0;
  if (slots <= 0) {
    if (per_item) per_item->assign(p.size(), 0.0);
    return 0.0;
  }
  // Che: an item stays for a characteristic time T; sum of occupancies equals the capacity.
  auto occupancy = [&](double T) {
    double s = one_off * T;
    for (double x : p) s += 1.0 - std::exp(-x * T);
    return s;
  };
  double lo = 0, hi = 1;
  while (occupancy(hi) < slots && hi < 1e300) hi *= 2;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (occupancy(mid) < slots ? lo : hi) = mid;
  }
  double hits = 0, total = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double h = 1.0 - std::exp(-p[i] * hi);
    if (per_item) (*per_item)[i] = h;
    hits += p[i] * h;
    total += p[i];
  }
  return total > 0 ? hits / total : 1.0;
}

DenseBytes dense_bytes_of(const CostInputs& in) {
  if (in.dense_override) return *in.dense_override;
  return dense_bytes(in.model, dense_format_valid(in.dense_format) ? in.dense_format : "fp8");
}

Prediction predict(const CostInputs& in, const Placement& pl) {
  const ModelConfig& c = in.model;
  const ModelSizes s = compute_model_sizes(c);
  const DenseBytes db = dense_bytes_of(in);
  const CostRates r = cost_rates(in);
  const double eb = double(in.expert_bytes);
  const double B = double(std::max<int64_t>(1, in.batch));
  const double fill = double(in.decode_fill > 0 ? in.decode_fill : std::max<int64_t>(1, in.context / 2));
  const double attended = c.arch == ModelArch::V32 ? std::min(fill, double(c.index_topk)) : fill;
  const double P = double(std::max<int64_t>(1, in.prefill_chunk));
  const double prefill_ctx = P / 2.0;  // a chunk from position 0 attends to half of itself on average
  const double expert_flops_per_token = 6.0 * double(c.hidden_size) * double(c.moe_intermediate_size);

  Prediction out;
  // Probability that a decode step (B tokens) / a prefill chunk (P tokens) uses each expert.
  auto used = expert_use_probability;

  // NVMe-tier experts share one RAM cache: its hit rate comes from their reference rates.
  std::vector<double> nvme_q;
  std::vector<std::pair<int64_t, int64_t>> nvme_ids;
  double all_reads = 0, reads[kTierCount] = {0, 0, 0};
  for (int64_t l = pl.first_moe_layer; l < pl.num_hidden_layers; ++l)
    for (int64_t e = 0; e < pl.n_routed_experts; ++e) {
      const double f = in.stats.frequency(l, e);
      all_reads += f;
      reads[int(pl.at(l, e))] += f;
      if (pl.at(l, e) == Tier::Nvme) {
        nvme_q.push_back(used(f, B));
        nvme_ids.push_back({l, e});
      }
    }
  std::vector<double> hit;
  const double slots = eb > 0 ? std::floor(double(pl.nvme_cache_bytes) / eb) : 0;
  // Prefetch: each MoE layer after the first is predicted from the previous one's input; the
  // prediction's NVMe-tier experts (at most half the cache, as the runtime limits it) are read
  // ahead. A share 1 - precision of them is not used: those wasted reads take disk time and
  // bytes, and each holds a cache slot for as long as any item stays, which the demand reads
  // then lack.
  const double precision = std::clamp(in.prefetch_precision, 0.01, 1.0);
  const bool prefetching = in.prefetch_recall > 0 && !nvme_q.empty();
  std::vector<double> wasted_experts(static_cast<size_t>(pl.moe_layers()), 0.0);
  double wasted_slots = 0;
  if (prefetching)
    for (int64_t l = pl.first_moe_layer + 1; l < pl.num_hidden_layers; ++l) {
      if (!c.is_moe_layer(l) || !c.is_moe_layer(l - 1)) continue;
      double predicted = 0;
      for (int64_t e = 0; e < pl.n_routed_experts; ++e)
        if (pl.at(l, e) == Tier::Nvme) predicted += used(in.stats.frequency(l, e), B);
      predicted = std::min(predicted, std::max(1.0, std::floor(slots / 2)));
      wasted_experts[static_cast<size_t>(l - pl.first_moe_layer)] = predicted * (1.0 - precision);
      wasted_slots += predicted * (1.0 - precision);
    }
  out.nvme_cache_hit_rate = nvme_q.empty() ? 1.0 : cache_hit_rate(nvme_q, slots, &hit, wasted_slots);
  std::vector<std::vector<double>> hit_of(static_cast<size_t>(pl.moe_layers()),
                                          std::vector<double>(static_cast<size_t>(pl.n_routed_experts), 1.0));
  for (size_t i = 0; i < nvme_ids.size(); ++i)
    hit_of[static_cast<size_t>(nvme_ids[i].first - pl.first_moe_layer)][static_cast<size_t>(nvme_ids[i].second)] = hit[i];

  if (all_reads > 0) {
    out.share_vram = reads[0] / all_reads;
    out.share_ram = reads[1] / all_reads;
    double nvme_hit_reads = 0;
    for (size_t i = 0; i < nvme_ids.size(); ++i)
      nvme_hit_reads += in.stats.frequency(nvme_ids[i].first, nvme_ids[i].second) * hit[i];
    out.share_nvme_hit = nvme_hit_reads / all_reads;
    out.share_nvme_miss = std::max(0.0, reads[2] / all_reads - out.share_nvme_hit);
  }

  // Per MoE layer: seconds of disk reads for its experts missing from the cache, one step.
  std::vector<double> miss_time(static_cast<size_t>(pl.moe_layers()), 0.0);
  if (r.disk_gbs > 0)
    for (size_t i = 0; i < nvme_ids.size(); ++i) {
      const auto [l, e] = nvme_ids[i];
      miss_time[static_cast<size_t>(l - pl.first_moe_layer)] +=
          used(in.stats.frequency(l, e), B) * (1.0 - hit[i]) * eb / (r.disk_gbs * 1e9);
    }

  TimeBreakdown& d = out.decode;
  TimeBreakdown& pf = out.prefill;
  double disk_bytes = 0, wasted_bytes = 0, prefill_disk_s = 0;
  double no_io_time = 0;  // decode time per step with no disk read possible (before the first routing, lm_head)
  bool after_moe = false;       // the previous layer was MoE: it read this one's experts ahead
  double read_behind = 0;       // read-ahead still in flight when a layer starts
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const bool moe = c.is_moe_layer(l);
    const LayerBytes lb = layer_bytes(s, moe);
    const double shared_fp8 = moe ? double(s.shared_expert.fp8_bytes) : 0.0;
    const double shared_params = moe ? double(s.shared_expert.params) : 0.0;
    // Attention and the rest of the non-expert work, decode and prefill.
    double d_attn, d_shared, p_attn, p_shared;
    if (r.gpu) {
      d_attn = (lb.fp8 - shared_fp8 + lb.bf16 + B * kv_read_bytes(c, fill, attended)) / (r.gpu_gbs * 1e9);
      d_shared = shared_fp8 / (r.gpu_gbs * 1e9);
      p_attn = (2.0 * (lb.params - shared_params) * P + P * attention_flops(c, prefill_ctx)) / (r.gpu_gflops * 1e9);
      p_shared = 2.0 * shared_params * P / (r.gpu_gflops * 1e9);
      d.gpu_dense += d_attn + d_shared;
      pf.gpu_dense += p_attn + p_shared;
    } else {
      // Packed dense weights run on the routed-expert kernels (their measured rate), FP8 as
      // shipped on the FP8 GEMV, routers and norms on the BF16/F32 one.
      const double pk = moe ? db.moe_attention_packed : db.dense_layer_packed;
      const double f8 = moe ? db.moe_attention_fp8 : db.dense_layer_fp8;
      const double b16 = moe ? db.moe_bf16 : db.dense_bf16;
      const double weights = pk / (r.cpu_dense_packed_gbs * 1e9) + f8 / (r.cpu_dense_fp8_gbs * 1e9);
      const double small = b16 / (r.cpu_dense_bf16_gbs * 1e9);
      const double compute = B * attention_flops(c, attended) / (r.cpu_attention_gflops * 1e9);
      d_attn = weights + small + compute;
      d_shared = moe ? db.moe_shared_packed / (r.cpu_dense_packed_gbs * 1e9) + db.moe_shared_fp8 / (r.cpu_dense_fp8_gbs * 1e9) : 0.0;
      // For --check: a dense layer's packed bytes hold its FFN; a MoE layer's its attention.
      CpuParts& cp = out.cpu_parts;
      if (moe) {
        cp.attention += weights + compute;
        cp.shared_experts += d_shared;
      } else {
        // A dense layer's attention matrices are a MoE layer's; the rest of its bytes are the FFN.
        const double attn_weights = db.moe_attention_packed / (r.cpu_dense_packed_gbs * 1e9) +
                                    db.moe_attention_fp8 / (r.cpu_dense_fp8_gbs * 1e9);
        cp.attention += attn_weights + compute;
        cp.dense_ffn += weights - attn_weights;
      }
      cp.routers += small;
      p_attn = (2.0 * (lb.params - shared_params) * P) / (r.cpu_gemm_gflops * 1e9) +
               P * attention_flops(c, prefill_ctx) / (r.cpu_attention_gflops * 1e9);
      p_shared = 2.0 * shared_params * P / (r.cpu_gemm_gflops * 1e9);
      d.cpu_dense += d_attn + d_shared;
      pf.cpu_dense += p_attn + p_shared;
    }
    // No read can be in flight before the first read of the step is issued: up to the first
    // MoE layer's routing nothing is predicted (the next token's experts are unknown until
    // the sampled token goes through the layers before).
    if (!after_moe) no_io_time += d_attn + (moe ? 0.0 : d_shared);
    if (!moe) {
      after_moe = false;
      read_behind = 0;
      d.total += d_attn + d_shared;
      pf.total += p_attn + p_shared;
      continue;
    }
    // Routed experts of this layer by tier.
    double dg = 0, dc_hit = 0, dc_miss = 0, dio = 0;  // decode
    double pg = 0, pc = 0, pio = 0;                   // prefill
    const auto row = static_cast<size_t>(l - pl.first_moe_layer);
    for (int64_t e = 0; e < pl.n_routed_experts; ++e) {
      const double f = in.stats.frequency(l, e);
      if (f <= 0) continue;
      const double ud = used(f, B), up = used(f, P);
      const double tokens_p = f * P;
      switch (pl.at(l, e)) {
        case Tier::Vram:
          dg += ud * eb / (r.gpu_gbs * 1e9);
          pg += std::max(tokens_p * expert_flops_per_token / (r.gpu_gflops * 1e9), up * eb / (r.gpu_gbs * 1e9));
          break;
        case Tier::Ram:
          dc_hit += ud * eb / (r.cpu_expert_gbs * 1e9);
          pc += std::max(tokens_p * expert_flops_per_token / (r.cpu_expert_gflops * 1e9), up * eb / (r.cpu_expert_gbs * 1e9));
          break;
        case Tier::Nvme: {
          const double h = hit_of[row][static_cast<size_t>(e)];
          const double t = ud * eb / (r.cpu_expert_gbs * 1e9);
          dc_hit += h * t;
          dc_miss += (1.0 - h) * t;
          const double miss_bytes = ud * (1.0 - h) * eb;
          disk_bytes += miss_bytes;
          dio += r.disk_gbs > 0 ? miss_bytes / (r.disk_gbs * 1e9) : 1e9;
          pc += tokens_p * expert_flops_per_token / (r.cpu_expert_gflops * 1e9);
          // A long chunk touches nearly every expert; the cache holds few of them.
          pio += r.disk_gbs > 0 ? up * (1.0 - h) * eb / (r.disk_gbs * 1e9) : 1e9;
          break;
        }
      }
    }
    // The disk serves reads in the order they are issued. At the start of its routed experts
    // a layer issues the next layer's prediction (its router on this input), then its own
    // missing experts not read ahead, then computes its resident experts while they arrive;
    // a missed expert's compute waits for its bytes. So this layer's demand reads queue behind
    // the next layer's read-ahead, and that read-ahead is done by the time the next layer runs
    // (or what is left of it delays that layer). A share 1 - precision of the read-ahead is
    // experts the next token does not choose: in practice they are almost never cached already
    // (measured on the wide model), so each is a blob read that serves nothing. Reading also
    // costs CPU time (the kernel's I/O work), taken from the compute.
    const bool read_ahead = after_moe && in.prefetch_recall > 0 && r.disk_gbs > 0;
    const double dio_left = dio - (read_ahead ? in.prefetch_recall * dio : 0.0);
    double pf_next = 0;
    if (in.prefetch_recall > 0 && r.disk_gbs > 0 && l + 1 < c.num_hidden_layers && c.is_moe_layer(l + 1)) {
      const double wasted = wasted_experts[row + 1] * eb;
      pf_next = in.prefetch_recall * miss_time[row + 1] + wasted / (r.disk_gbs * 1e9);
      wasted_bytes += wasted;
      disk_bytes += wasted;
    }
    const double io_bytes = (dio_left + pf_next) * r.disk_gbs * 1e9;
    const double io_cpu = io_bytes / 1e9 * r.disk_cpu_s_per_gb / double(std::max(1, in.machine.logical_cpus));
    double cpu_branch;
    if (dio_left > 0) {
      cpu_branch = std::max(dc_hit + io_cpu, read_behind + pf_next + dio_left) + dc_miss;
      read_behind = 0;
    } else {
      cpu_branch = std::max(dc_hit + io_cpu, read_behind) + dc_miss;
      read_behind = std::max(0.0, read_behind + pf_next - (cpu_branch + d_shared + d_attn));
    }
    const double stall = std::max(0.0, cpu_branch - dc_hit - dc_miss - io_cpu);
    after_moe = true;
    d.cpu_experts += dc_hit + dc_miss + io_cpu;
    d.nvme_stall += stall;
    out.cpu_parts.routed_experts += cpu_branch;
    d.gpu_experts += dg;
    const double p_cpu = std::max(pc, pio);
    pf.cpu_experts += pc;
    pf.nvme_stall += std::max(0.0, pio - pc);
    prefill_disk_s += pio;
    pf.gpu_experts += pg;
    const bool cpu_work = cpu_branch > 0;
    if (r.gpu) {
      const double sync = cpu_work ? kSyncSecondsPerLayer : 0.0;
      d.sync += sync;
      pf.sync += sync;
      d.total += d_attn + std::max(dg + d_shared, cpu_branch) + sync;
      d.hidden_by_overlap += std::min(dg + d_shared, cpu_branch);
      pf.total += p_attn + std::max(pg + p_shared, p_cpu) + sync;
      pf.hidden_by_overlap += std::min(pg + p_shared, p_cpu);
    } else {
      d.total += d_attn + d_shared + cpu_branch;
      pf.total += p_attn + p_shared + p_cpu;
    }
  }
  // Final norm and lm_head (the embedding is one row per token).
  const double head = double(s.lm_head.fp8_bytes);
  if (r.gpu) {
    d.gpu_dense += head / (r.gpu_gbs * 1e9);
    d.total += head / (r.gpu_gbs * 1e9);
    no_io_time += head / (r.gpu_gbs * 1e9);
    const double ph = 2.0 * double(s.lm_head.params) / (r.gpu_gflops * 1e9);  // last position only
    pf.gpu_dense += ph;
    pf.total += ph;
  } else {
    const double t = db.lm_head_packed / (r.cpu_dense_packed_gbs * 1e9) + db.lm_head_bf16 / (r.cpu_dense_bf16_gbs * 1e9);
    out.cpu_parts.lm_head = t;
    no_io_time += t;
    d.cpu_dense += t;
    d.total += t;
    pf.cpu_dense += t;
    pf.total += t;
  }
  // The disk is one resource: however the reads overlap with compute, a step cannot take less
  // than the time to read its missed bytes (per-layer overlap alone would let it) plus the
  // time when no read can be in flight.
  bool disk_bound = false;
  if (r.disk_gbs > 0) {
    const double disk_s = disk_bytes > 0 ? disk_bytes / (r.disk_gbs * 1e9) + no_io_time : 0.0;
    if (disk_s > d.total) {
      out.cpu_parts.routed_experts += disk_s - d.total;
      d.nvme_stall += disk_s - d.total, d.total = disk_s, disk_bound = true;
    }
    if (prefill_disk_s > pf.total) pf.nvme_stall += prefill_disk_s - pf.total, pf.total = prefill_disk_s;
  }
  out.decode_tokens_per_s = d.total > 0 ? 1.0 / d.total : 0.0;  // per sequence
  out.prefill_tokens_per_s = pf.total > 0 ? P / pf.total : 0.0;
  out.expert_bytes_from_disk_per_token = disk_bytes / B;
  out.wasted_bytes_from_disk_per_token = wasted_bytes / B;

  // Name the largest share of the decode step.
  struct Part { double t; const char* what; };
  const Part parts[] = {
      {d.gpu_dense, "GPU attention, shared experts and lm_head (device memory bandwidth)"},
      {d.gpu_experts, "routed experts in VRAM (device memory bandwidth)"},
      {d.cpu_dense, "attention, shared experts and lm_head on the CPU (dense matmul rate)"},
      {d.cpu_experts, "routed experts on the CPU (RAM bandwidth)"},
      {d.nvme_stall, "waiting for NVMe reads of experts missing from the RAM cache (disk bandwidth)"},
      {d.sync, "GPU/CPU hand-offs per layer (latency)"},
  };
  const Part* best = &parts[0];
  for (const Part& p : parts)
    if (p.t > best->t) best = &p;
  char buf[256];
  if (disk_bound) {
    std::snprintf(buf, sizeof buf, "NVMe reads of experts missing from the RAM cache (disk bandwidth): a step takes as "
                  "long as reading its %.2f GB at %.1f GB/s, plus %.0f ms when no read can be in flight",
                  disk_bytes / 1e9, r.disk_gbs, 1e3 * no_io_time);
    out.bottleneck = buf;
    return out;
  }
  std::snprintf(buf, sizeof buf, "%s: %.0f%% of a decode step", best->what,
                d.total > 0 ? 100.0 * best->t / (d.total + d.hidden_by_overlap) : 0.0);
  out.bottleneck = buf;
  return out;
}

}  // namespace mt::planner
