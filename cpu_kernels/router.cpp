// DeepSeek V3 group-limited sigmoid router (spec 3.5), fp32 throughout.
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "cpu_kernels/ops.h"

namespace mt::cpu {

// 1. s = sigmoid(logits); 2. b = s + bias (bias only steers selection; null bias = zeros);
// 3. if 1 < topk_group < n_group: group score G_g = sum of the two largest b in the group (the
//    single b when a group has one expert), keep the topk_group best groups (ties -> lower group
//    index) and set b = -inf outside them; 4. experts = top_k of b (descending b, ties -> lower
//    index); 5. weights = unbiased s of the chosen experts, divided by their sum (+1e-20, as HF,
//    which only matters if every chosen s underflowed to 0) when norm_topk_prob, then multiplied
//    by routed_scaling_factor. experts[] comes out in descending order of the biased score.
void route_sigmoid_grouped(const float* logits, const float* bias, const RouterParams& p,
                           int32_t* experts, float* weights) {
  const int64_t E = p.n_experts;
  if (E <= 0 || p.top_k <= 0 || p.top_k > E)
    throw std::invalid_argument("route_sigmoid_grouped: need 0 < top_k <= n_experts");
  const bool grouped = p.n_group > 1 && p.topk_group < p.n_group;
  if (grouped) {
    if (E % p.n_group != 0 || p.topk_group <= 0)
      throw std::invalid_argument("route_sigmoid_grouped: bad n_group / topk_group");
    if (p.top_k > p.topk_group * (E / p.n_group))
      throw std::invalid_argument("route_sigmoid_grouped: top_k exceeds experts in kept groups");
  }

  // Plain locals: the reference router runs once per token and MoE layer, far from any hot loop.
  std::vector<float> s(static_cast<size_t>(E)), b(static_cast<size_t>(E)), gscore;
  std::vector<int32_t> gidx;
  for (int64_t e = 0; e < E; ++e) {
    s[e] = 1.0f / (1.0f + std::exp(-logits[e]));
    b[e] = s[e] + (bias ? bias[e] : 0.0f);
  }

  if (grouped) {
    const int64_t G = p.n_group, gs = E / G;
    gscore.resize(static_cast<size_t>(G));
    for (int64_t g = 0; g < G; ++g) {
      const float* bg = b.data() + g * gs;
      if (gs == 1) {
        gscore[g] = bg[0];
        continue;
      }
      int32_t two[2];
      topk(bg, gs, 2, two);
      gscore[g] = bg[two[0]] + bg[two[1]];
    }
    gidx.resize(static_cast<size_t>(G));
    topk(gscore.data(), G, p.topk_group, gidx.data());
    // Reuse gscore as a kept-group flag array.
    for (int64_t g = 0; g < G; ++g) gscore[g] = 0.0f;
    for (int64_t j = 0; j < p.topk_group; ++j) gscore[gidx[j]] = 1.0f;
    const float ninf = -std::numeric_limits<float>::infinity();
    for (int64_t g = 0; g < G; ++g)
      if (gscore[g] == 0.0f)
        for (int64_t e = g * gs; e < (g + 1) * gs; ++e) b[e] = ninf;
  }

  topk(b.data(), E, p.top_k, experts);

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

}  // namespace mt::cpu
