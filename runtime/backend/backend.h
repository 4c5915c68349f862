// The backend seam: the narrow set of operations the DeepSeek graph (runtime/model) runs, and
// nothing else. Modelled on ggml's backend vtable. A backend has a name, says what it supports,
// owns the attention caches of the sequences it runs attention for, and keeps whatever it
// derives from the weights (e.g. the reference backend's fp32 kv_b for absorbed attention)
// counted in weight_bytes(). Backends: the reference backend (cpu_kernels/reference_backend.h,
// exact fp32, the oracle of tests/unit/test_backend_ops.cpp); fast CPU and CUDA backends plug
// in here.
//
// Activations are fp32, row-major [n_tokens, width], in the backend's own memory (host memory
// for the CPU backends, VRAM for the CUDA backend): the graph allocates them with
// alloc_activations and touches them only through ops, upload and download. What crosses to the
// host is said per op: token ids, the router's choices, the indexer's selection, the MLA
// selection, and the vectors named below. Weights arrive as WeightView (any stored format).
// Ops do not fail on well-formed arguments: the graph validates inputs first.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/core/expert_format.h"
#include "runtime/core/weight_view.h"

namespace mt {

// DeepSeek V3 group-limited sigmoid routing (spec section 3.5).
struct RouterParams {
  int64_t n_experts = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t top_k = 1;
  float routed_scaling_factor = 1.0f;
  bool norm_topk_prob = true;
};

// Per-head dimensions of MLA in the absorbed form.
struct MlaHeadDims {
  int64_t nope = 0;     // qk_nope_head_dim
  int64_t rope = 0;     // qk_rope_head_dim
  int64_t v = 0;        // v_head_dim
  int64_t latent = 0;   // kv_lora_rank
};

// One routed expert applied to some tokens: y[tokens[i]] += weight[i] * Expert(x[tokens[i]]),
// i < n, with the expert as a packed blob (runtime/core/expert_format.h). weight may be null (1).
// For a runner that holds its own copy of the expert (ExpertRunner::make_resident), `key`
// names it (expert_key) and `blob` may be null.
struct ExpertTask {
  const uint8_t* blob = nullptr;
  const int32_t* tokens = nullptr;
  const float* weight = nullptr;
  int64_t n = 0;
  int64_t key = -1;
};

inline int64_t expert_key(int64_t layer, int64_t expert) { return (layer << 32) | expert; }

namespace backend {

enum class Op {
  Embed, Matmul, RmsNorm, LayerNorm, Rope, SiluMul, Add, Route, CacheStore, MlaAttention, IndexerTopk, ExpertFfn,
};
inline constexpr Op kAllOps[] = {Op::Embed,       Op::Matmul, Op::RmsNorm, Op::LayerNorm,  Op::Rope,
                                 Op::SiluMul,     Op::Add,    Op::Route,   Op::CacheStore, Op::MlaAttention,
                                 Op::IndexerTopk, Op::ExpertFfn};
const char* op_name(Op op);

enum class RopeLayout { Interleaved, HalfSplit };

// What one sequence's attention caches hold per layer and position.
struct CacheShape {
  int64_t layers = 0;
  int64_t latent = 0;     // kv_lora_rank: the normalised KV latent
  int64_t rope = 0;       // qk_rope_head_dim: the rotated shared key
  int64_t index_key = 0;  // index_head_dim of the V3.2 indexer; 0: no indexer
};

// One sequence's MLA latent cache (and V3.2 index keys), in the layout of the backend that made
// it; only that backend reads or writes it. size(): positions filled so far.
class AttentionCache {
 public:
  virtual ~AttentionCache() = default;
  int64_t max_tokens() const { return max_tokens_; }
  int64_t size() const { return n_; }
  void set_size(int64_t n) { n_ = n; }
  virtual size_t bytes() const = 0;

 protected:
  explicit AttentionCache(int64_t max_tokens) : max_tokens_(max_tokens) {}

 private:
  int64_t max_tokens_ = 0, n_ = 0;
};

// Absorbed MLA for n queries at positions pos0.. of `layer` over the cache (already holding
// those positions): per query and head, softmax(scale * (W_UK^T q_nope . c_kv + q_rope . k_rope))
// over its keys, then W_UV of the weighted latent.
struct MlaArgs {
  int64_t layer = 0, n = 0, pos0 = 0, heads = 0;
  MlaHeadDims dims;
  float scale = 1.0f;
  const float* q = nullptr;  // [n, heads, nope + rope], the rope part rotated
  // Per query, the positions it attends to (V3.2 selection); null: causal, [0, pos0 + t].
  const std::vector<std::vector<int32_t>>* selected = nullptr;
  float* out = nullptr;      // [n, heads, v]
};

// V3.2 lightning indexer: per query t, the top_k of positions [0, pos0 + t] by
// sum_h head_weight[t, h] * scale * ReLU(q[t, h] . key[s]), in ascending position order; every
// visible position when there are no more than top_k.
struct IndexerArgs {
  int64_t layer = 0, n = 0, pos0 = 0, heads = 0, dim = 0, top_k = 0;
  float scale = 1.0f;
  const float* q = nullptr;            // [n, heads, dim], rotated
  const float* head_weight = nullptr;  // [n, heads]
};

// fp32 activation memory in a backend's space; freed on destruction.
class ActivationBuffer {
 public:
  virtual ~ActivationBuffer() = default;
  ActivationBuffer(const ActivationBuffer&) = delete;
  ActivationBuffer& operator=(const ActivationBuffer&) = delete;
  float* data() const { return data_; }
  int64_t size() const { return n_; }

 protected:
  ActivationBuffer(float* data, int64_t n) : data_(data), n_(n) {}
  void reset(float* data, int64_t n) { data_ = data, n_ = n; }

 private:
  float* data_ = nullptr;
  int64_t n_ = 0;
};

// A stretch of ops that a backend may record and replay as one (a CUDA graph): one layer's
// attention block in one step. `decode`: every sequence of the step has one row.
struct Region {
  int64_t layer = 0, rows = 0, sequences = 0;
  bool decode = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Whether `op` runs here with weights stored as `weight` (ops without weights: any dtype).
  virtual bool supports(Op op, DType weight) const = 0;
  // Whether expert_ffn runs here on packed blobs of `quant`.
  virtual bool supports_experts(ExpertQuant quant) const = 0;

  // Says that `w` is a model weight: its memory stays valid and unchanged for the backend's
  // lifetime, so a backend may keep a copy in its own layout (a GPU uploads it once). Any other
  // weight passed to matmul is used as it is, for that call only.
  virtual void prepare_weight(const WeightView& w) { (void)w; }
  // What this backend's attention caches store latents in (F32, or BF16 on a GPU): a test's
  // error bound for attention follows it.
  virtual DType cache_dtype() const { return DType::F32; }

  // Activation memory (contents unspecified) and the only ways the host reads or writes it.
  // The defaults are host memory and memcpy.
  virtual std::unique_ptr<ActivationBuffer> alloc_activations(int64_t n);
  virtual void upload(const float* host, float* dst, int64_t n);
  virtual void download(const float* src, float* host, int64_t n);
  // dst[r * ld_dst + c] = src[r * ld_src + c], r < rows, c < cols (non-overlapping).
  virtual void copy_rows(const float* src, int64_t ld_src, float* dst, int64_t ld_dst, int64_t rows, int64_t cols);
  virtual void zero(float* dst, int64_t n);
  // Says that the host vector `v` [n] is a model constant (a norm's weight or bias, the router's
  // bias, the RoPE frequencies), valid and unchanged for the backend's lifetime, so a backend
  // may keep a copy where its ops run. Such vectors are passed to ops as host pointers; one that
  // was not prepared is used as it is, for that call only.
  virtual void prepare_vector(const float* v, int64_t n) { (void)v, (void)n; }

  // Between begin_region and end_region a backend may defer the ops until end_region (it
  // records them, then launches the record). So inside a region the graph must not download, and
  // an op whose result goes to the host (route, indexer_topk) makes the region one that a
  // backend runs op by op. end_region(false) (an exception unwinding) drops what is deferred.
  virtual void begin_region(const Region& r) { (void)r; }
  virtual void end_region(bool completed) { (void)completed; }

  // Prepares absorbed attention for `layer` from its kv_b_proj [heads * (nope + v), latent].
  virtual void load_attention_weights(int64_t layer, const WeightView& kv_b, const MlaHeadDims& dims) = 0;
  // Bytes this backend holds beyond the mapped weights (derived weights), for memory budgets.
  virtual uint64_t weight_bytes() const = 0;
  virtual std::unique_ptr<AttentionCache> make_cache(const CacheShape& shape, int64_t max_tokens) = 0;

  // out[t] = table[ids[t]] (a row of the embedding, decoded to fp32); ids on the host.
  virtual void embed(const WeightView& table, const int32_t* ids, int64_t n, float* out) = 0;
  // y[n, w.rows] = x[n, w.cols] W^T
  virtual void matmul(const WeightView& w, const float* x, int64_t n, float* y) = 0;
  virtual void rmsnorm(const float* x, const float* w, float* y, int64_t n, int64_t dim, float eps) = 0;
  virtual void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t dim, float eps) = 0;
  // Rotates `rope_dim` dims of each of `heads` heads in each of n rows, in place: head h of row t
  // starts at x + (t * heads + h) * stride and sits at position pos0 + t.
  virtual void rope(RopeLayout layout, float* x, int64_t n, int64_t heads, int64_t stride, int64_t rope_dim, int64_t pos0,
                    const float* inv_freq) = 0;
  // out[i] = silu(gate[i]) * up[i]   (out may alias gate)
  virtual void silu_mul(const float* gate, const float* up, float* out, int64_t n) = 0;
  // acc[i] += x[i]
  virtual void add(float* acc, const float* x, int64_t n) = 0;
  // Router logits [n, n_experts] -> experts and weights [n, top_k] on the host (the expert
  // scheduler runs there); bias (a host vector) may be null.
  virtual void route(const float* logits, const float* bias, const RouterParams& p, int64_t n, int32_t* experts,
                     float* weights) = 0;
  // Writes n positions from pos0 of `layer`: latent [n, latent], k_rope [n, rope] (rotated).
  virtual void cache_store(AttentionCache& cache, int64_t layer, int64_t pos0, int64_t n, const float* latent,
                           const float* k_rope) = 0;
  // Writes n V3.2 index keys [n, index_key] (rotated) from pos0 of `layer`.
  virtual void cache_store_index_key(AttentionCache& cache, int64_t layer, int64_t pos0, int64_t n, const float* keys) = 0;
  virtual void mla_attention(AttentionCache& cache, const MlaArgs& a) = 0;
  // The selection is returned on the host.
  virtual void indexer_topk(AttentionCache& cache, const IndexerArgs& a, std::vector<std::vector<int32_t>>& selected) = 0;
  // Routed experts over a task list (host memory: blobs, tokens, weights): every task's tokens
  // through its packed expert, into y ([T, hidden], accumulated); x is [T, hidden].
  virtual void expert_ffn(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y) = 0;
};

}  // namespace backend
}  // namespace mt
