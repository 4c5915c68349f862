// The DeepSeek V3 group-limited sigmoid router for one token (spec 3.5), as the CUDA backend's
// route kernel runs it: __host__ __device__, so tests/unit/test_gpu_router.cpp checks on the CPU
// that it chooses what cpu_kernels/router.cpp chooses, bit for bit. The same steps and the
// same order (ties to the lower index, NaN last), with the top-k as repeated selection: k is
// 8 of 256 and the groups 4 of 8, so a sort would be wasted.
#pragma once

#include <cmath>
#include <cstdint>

#include "gpu_kernels/gpu_layout.h"  // MT_HD
#include "runtime/backend/backend.h"  // RouterParams

namespace mt::gpu {

constexpr int64_t kRouterMaxExperts = 512, kRouterMaxGroups = 64;

// Whether route_token takes these parameters (the sizes of its per-thread arrays).
inline bool gpu_router_ok(const RouterParams& p) {
  return p.n_experts > 0 && p.n_experts <= kRouterMaxExperts && p.n_group <= kRouterMaxGroups && p.top_k > 0 &&
         p.top_k <= p.n_experts && (p.n_group <= 1 || p.n_experts % p.n_group == 0);
}

// Whether a comes before b: larger first, NaN after every number, ties to the lower index.
MT_HD bool router_before(const float* x, int32_t a, int32_t b) {
  const float va = x[a], vb = x[b];
  const bool na = va != va, nb = vb != vb;
  if (na || nb) return na == nb ? a < b : nb;
  if (va != vb) return va > vb;
  return a < b;
}

// The k first of x[0, n) in that order, into idx; `taken` [n] is scratch.
MT_HD void router_topk(const float* x, int64_t n, int64_t k, int32_t* idx, bool* taken) {
  for (int64_t i = 0; i < n; ++i) taken[i] = false;
  for (int64_t j = 0; j < k; ++j) {
    int32_t best = -1;
    for (int32_t i = 0; i < int32_t(n); ++i)
      if (!taken[i] && (best < 0 || router_before(x, i, best))) best = i;
    idx[j] = best;
    taken[best] = true;
  }
}

MT_HD float router_sigmoid(float x) {
#if defined(__CUDA_ARCH__)
  return 1.0f / (1.0f + expf(-x));
#else
  return 1.0f / (1.0f + std::exp(-x));
#endif
}

// One token: logits [n_experts] (bias [n_experts] or null) -> experts and weights [top_k].
MT_HD void route_token(const float* logits, const float* bias, const RouterParams& p, int32_t* experts,
                       float* weights) {
  const int64_t E = p.n_experts;
  float s[kRouterMaxExperts], b[kRouterMaxExperts];
  bool taken[kRouterMaxExperts];
  for (int64_t e = 0; e < E; ++e) {
    s[e] = router_sigmoid(logits[e]);
    b[e] = s[e] + (bias ? bias[e] : 0.0f);
  }
  if (p.n_group > 1 && p.topk_group < p.n_group) {
    const int64_t G = p.n_group, gs = E / G;
    float gscore[kRouterMaxGroups];
    int32_t gidx[kRouterMaxGroups];
    for (int64_t g = 0; g < G; ++g) {
      if (gs == 1) {
        gscore[g] = b[g];
        continue;
      }
      int32_t two[2];
      router_topk(b + g * gs, gs, 2, two, taken);
      gscore[g] = b[g * gs + two[0]] + b[g * gs + two[1]];
    }
    router_topk(gscore, G, p.topk_group, gidx, taken);
    for (int64_t g = 0; g < G; ++g) taken[g] = false;
    for (int64_t j = 0; j < p.topk_group; ++j) taken[gidx[j]] = true;
    for (int64_t g = 0; g < G; ++g)
      if (!taken[g])
        for (int64_t e = g * gs; e < (g + 1) * gs; ++e) b[e] = -INFINITY;
  }
  router_topk(b, E, p.top_k, experts, taken);
  float sum = 0.0f;
  for (int64_t k = 0; k < p.top_k; ++k) {
    weights[k] = s[experts[k]];
    sum += weights[k];
  }
  for (int64_t k = 0; k < p.top_k; ++k) {
    if (p.norm_topk_prob) weights[k] = weights[k] / (sum + 1e-20f);
    weights[k] *= p.routed_scaling_factor;
  }
}

}  // namespace mt::gpu
