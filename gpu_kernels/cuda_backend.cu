#include "gpu_kernels/cuda_backend.h"

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/cuda_elementwise.cuh"
#include "gpu_kernels/cuda_experts.cuh"
#include "gpu_kernels/cuda_ops.cuh"
#include "gpu_kernels/fp8_cache_layout.h"
#include "gpu_kernels/gpu_layout.h"
#include "gpu_kernels/gpu_probe.h"
#include "gpu_kernels/graph_policy.h"

namespace mt::gpu {

namespace {

using backend::AttentionCache;
using backend::Op;

constexpr uint64_t kVramReserve = uint64_t{1} << 30;  // for cuBLAS workspaces, the context, fragmentation
constexpr int64_t kScoreBytes = int64_t{256} << 20;    // attention scores + probabilities per chunk of queries
constexpr size_t kCublasWorkspace = size_t{32} << 20;  // set, so that cuBLAS allocates nothing inside a graph capture

// A dense weight in VRAM, in its GPU form (gpu_layout.h).
struct DeviceWeight {
  DeviceBuffer buf;
  bool bf16 = true;
  DType stored = DType::F32;  // what it was made from
  int64_t rows = 0, cols = 0;
};

// One sequence's caches in VRAM: per layer [max_tokens, latent + rope] (latent and rotated
// key side by side, so one GEMM scores both parts) in BF16 or F32, or FP8 rows
// (fp8_cache_layout.h) that attention dequantises to BF16; and the V3.2 index keys
// [max_tokens, index_key] fp32 (the top-k must order scores as the CPU does).
class CudaCache final : public AttentionCache {
 public:
  CudaCache(const backend::CacheShape& s, int64_t max_tokens, DType type, std::shared_ptr<DeviceContext> ctx)
      : AttentionCache(max_tokens), shape(s), type(type), fp8(fp8_row(s.latent, s.rope)), ctx_(std::move(ctx)) {
    row = s.latent + s.rope;
    row_bytes = type == DType::F8_E4M3 ? fp8.bytes : uint64_t(row) * (type == DType::BF16 ? 2 : 4);
    kv_bytes = uint64_t(s.layers) * uint64_t(max_tokens) * row_bytes;
    idx_bytes = uint64_t(s.layers) * uint64_t(max_tokens) * uint64_t(s.index_key) * 4;
    const Status st = ctx_->charge("attention caches", kv_bytes + idx_bytes);
    if (!st.ok()) throw DeviceError(st.error());
    // Not cleared: no op reads a row before cache_store wrote it (the graph attends only to
    // filled positions).
    Status a = kv.try_ensure(std::max<uint64_t>(kv_bytes, 1));
    if (a.ok() && idx_bytes) a = idx.try_ensure(idx_bytes);
    if (!a.ok()) {
      ctx_->vram.release("attention caches", kv_bytes + idx_bytes);
      throw DeviceError("the attention cache: " + a.error());
    }
  }
  ~CudaCache() override { ctx_->vram.release("attention caches", kv_bytes + idx_bytes); }
  size_t bytes() const override { return kv_bytes + idx_bytes; }
  uint8_t* kv_layer(int64_t layer) const { return kv.as<uint8_t>() + uint64_t(layer) * uint64_t(max_tokens()) * row_bytes; }
  float* idx_layer(int64_t layer) const {
    return idx.as<float>() + uint64_t(layer) * uint64_t(max_tokens()) * uint64_t(shape.index_key);
  }
  // What attention computes in: BF16 for BF16 and FP8 rows.
  bool bf16() const { return type != DType::F32; }

  backend::CacheShape shape;
  DType type;
  Fp8Row fp8;
  int64_t row = 0;  // elements
  uint64_t row_bytes = 0, kv_bytes = 0, idx_bytes = 0;
  DeviceBuffer kv, idx;

 private:
  std::shared_ptr<DeviceContext> ctx_;
};

// Activation memory in VRAM, recycled: a decode step asks for the same sizes every time, and
// cudaMalloc/cudaFree synchronise the device. Buffers go back to the pool when the graph frees
// them; every op runs on the backend's one stream, so a buffer reused at once is still written
// only after the last op that read it. The pool's VRAM is charged as "activations".
class ActivationPool {
 public:
  explicit ActivationPool(std::shared_ptr<DeviceContext> ctx) : ctx_(std::move(ctx)) {}
  ~ActivationPool() { ctx_->vram.release("activations", charged_); }
  ActivationPool(const ActivationPool&) = delete;
  ActivationPool& operator=(const ActivationPool&) = delete;

  DeviceBuffer take(size_t bytes) {
    bytes = (std::max<size_t>(bytes, 1) + 4095) / 4096 * 4096;
    // The smallest free buffer that fits and wastes no more than its request.
    auto it = free_.lower_bound(bytes);
    if (it != free_.end() && it->first <= 2 * bytes) {
      DeviceBuffer b = std::move(it->second);
      free_.erase(it);
      return b;
    }
    Status st = ctx_->charge("activations", bytes);
    if (!st.ok() && !free_.empty()) {  // a long prompt's buffers, idle now: give them back and retry
      trim();
      st = ctx_->charge("activations", bytes);
    }
    if (!st.ok()) throw DeviceError("activations: " + st.error());
    charged_ += bytes;
    DeviceBuffer b;
    b.ensure(bytes);
    return b;
  }
  void give(DeviceBuffer b) {
    const size_t n = b.bytes();
    free_.emplace(n, std::move(b));
  }
  // Frees every idle buffer (cudaFree waits for the device, so none is still in use).
  void trim() {
    for (auto& [n, b] : free_) ctx_->vram.release("activations", n), charged_ -= n;
    free_.clear();
  }

 private:
  std::shared_ptr<DeviceContext> ctx_;
  std::multimap<size_t, DeviceBuffer> free_;
  uint64_t charged_ = 0;
};

class DeviceActivations final : public backend::ActivationBuffer {
 public:
  DeviceActivations(std::shared_ptr<ActivationPool> pool, int64_t n)
      : ActivationBuffer(nullptr, n), pool_(std::move(pool)), buf_(pool_->take(size_t(n) * 4)) {
    reset(buf_.as<float>(), n);
  }
  ~DeviceActivations() override { pool_->give(std::move(buf_)); }

 private:
  std::shared_ptr<ActivationPool> pool_;
  DeviceBuffer buf_;
};

cudaDataType dt(bool bf16) { return bf16 ? CUDA_R_16BF : CUDA_R_32F; }
size_t esize(bool bf16) { return bf16 ? 2 : 4; }

class CudaBackend final : public backend::Backend {
 public:
  CudaBackend(std::unique_ptr<backend::Backend> host, const CudaOptions& o, std::shared_ptr<DeviceContext> ctx)
      : host_(std::move(host)), ctx_(std::move(ctx)), cache_type_(o.cache_dtype), blas_(stream_.get()),
        experts_(ctx_, /*resident=*/false), pool_(std::make_shared<ActivationPool>(ctx_)), policy_(o.graphs),
        keep_free_(o.keep_free) {
    name_ = "cuda (" + ctx_->info.name + ") + " + host_->name();
    blas_workspace_.ensure(kCublasWorkspace);
    check(cublasSetWorkspace(blas_.get(), blas_workspace_.as(), kCublasWorkspace), "cublasSetWorkspace");
  }
  ~CudaBackend() override {
    for (auto& [key, exec] : execs_) cudaGraphExecDestroy(exec);
  }

  const char* name() const override { return name_.c_str(); }
  // Every op runs: on the GPU, or (weights that are not in VRAM, the router's group-limited
  // top-k, packed experts of a geometry the GPU kernels do not take) on the host backend,
  // with the activations copied over for that op.
  bool supports(Op op, DType w) const override { return host_->supports(op, w); }
  bool supports_experts(ExpertQuant q) const override { return q != ExpertQuant::GGUF && host_->supports_experts(q); }
  DType cache_dtype() const override { return cache_type_; }
  uint64_t weight_bytes() const override { return host_->weight_bytes(); }  // RAM only; VRAM: vram_accounting

  // Called again for an address it has seen: the weight there is new (a test's reused
  // buffer), so the copy is replaced.
  void prepare_weight(const WeightView& w) override {
    if (w.dtype == DType::GGUF) return;  // no kernels for ggml's block formats: the host backend runs them
    auto old = weights_.find(w.data);
    if (old != weights_.end()) {
      ctx_->vram.release("dense weights", old->second.buf.bytes());
      weights_.erase(old);
    }
    // What does not fit (leaving keep_free for the caches) stays where it is and runs on the
    // host backend: a 24 GB card holds part of V3's 33 GB of BF16 dense weights, not all.
    const uint64_t bytes = uint64_t(w.rows) * uint64_t(w.cols) * dtype_size(gpu_dense_dtype(w.dtype));
    const TierBudget& v = ctx_->vram;
    const bool room = v.limit() == 0 || v.used() + bytes + keep_free_ <= v.limit();
    DeviceWeight d;
    if (!room || !upload_dense(w, d, "dense weights").ok()) {
      host_bytes_ += bytes;
      return;
    }
    weights_.emplace(w.data, std::move(d));
  }

  void load_attention_weights(int64_t layer, const WeightView& kv_b, const MlaHeadDims&) override {
    if (kvb_.size() <= size_t(layer)) kvb_.resize(size_t(layer) + 1);
    ctx_->vram.release("kv_b of absorbed attention", kvb_[size_t(layer)].buf.bytes());
    kvb_[size_t(layer)] = DeviceWeight{};
    const Status s = upload_dense(kv_b, kvb_[size_t(layer)], "kv_b of absorbed attention");
    if (!s.ok() && setup_.ok()) setup_ = make_error("VRAM: layer " + std::to_string(layer) + ": " + s.error());
  }

  std::unique_ptr<AttentionCache> make_cache(const backend::CacheShape& s, int64_t max_tokens) override {
    return std::make_unique<CudaCache>(s, max_tokens, cache_type_, ctx_);
  }

  // Activations live in VRAM; the host reaches them only through these.
  std::unique_ptr<backend::ActivationBuffer> alloc_activations(int64_t n) override {
    return std::make_unique<DeviceActivations>(pool_, n);
  }
  void upload(const float* host, float* dst, int64_t n) override {
    touch_host("upload");
    // Returns once pageable memory is staged: the caller may free `host` at once.
    if (n > 0) check(cudaMemcpyAsync(dst, host, size_t(n) * 4, cudaMemcpyHostToDevice, stream_.get()), "upload");
  }
  void download(const float* src, float* host, int64_t n) override {
    touch_host("download");
    if (n <= 0) return;
    check(cudaMemcpyAsync(host, src, size_t(n) * 4, cudaMemcpyDeviceToHost, stream_.get()), "download");
    synchronize();
  }
  void copy_rows(const float* src, int64_t ls, float* dst, int64_t ld, int64_t rows, int64_t cols) override {
    if (rows <= 0 || cols <= 0) return;
    check(cudaMemcpy2DAsync(dst, size_t(ld) * 4, src, size_t(ls) * 4, size_t(cols) * 4, size_t(rows),
                            cudaMemcpyDeviceToDevice, stream_.get()),
          "copy_rows");
  }
  void zero(float* dst, int64_t n) override {
    if (n > 0) check(cudaMemsetAsync(dst, 0, size_t(n) * 4, stream_.get()), "zero");
  }
  // Re-preparing an address replaces its copy (a test's reused buffer).
  void prepare_vector(const float* v, int64_t n) override {
    auto old = vectors_.find(v);
    if (old != vectors_.end()) {
      ctx_->vram.release("norm weights and other model vectors", old->second.bytes());
      vectors_.erase(old);
    }
    DeviceBuffer d;
    if (!ctx_->charge("norm weights and other model vectors", size_t(n) * 4).ok()) return;  // used per call instead
    if (!d.try_ensure(size_t(n) * 4).ok()) {
      ctx_->vram.release("norm weights and other model vectors", size_t(n) * 4);
      return;
    }
    check(cudaMemcpyAsync(d.as(), v, size_t(n) * 4, cudaMemcpyHostToDevice, stream_.get()), "prepare_vector");
    stream_.sync("prepare_vector");
    vectors_.emplace(v, std::move(d));
  }

  void embed(const WeightView& t, const int32_t* ids, int64_t n, float* out) override {
    // The table stays in RAM (1.8 GB for V3; a few rows a step): gathered there, then uploaded.
    host_tmp_.resize(size_t(n * t.cols));
    host_->embed(t, ids, n, host_tmp_.data());
    upload(host_tmp_.data(), out, n * t.cols);
  }

  // Prepared weights on the GPU; any other (a checkpoint's routed experts, a dense weight that
  // did not fit) where it lies, on the CPU: copying a weight over PCIe for one product costs
  // more than copying the activations.
  void matmul(const WeightView& w, const float* x, int64_t n, float* y) override {
    auto it = weights_.find(w.data);
    if (it == weights_.end() || it->second.rows != w.rows || it->second.cols != w.cols || it->second.stored != w.dtype) {
      std::vector<float> hx(size_t(n * w.cols)), hy(size_t(n * w.rows));
      download(x, hx.data(), n * w.cols);
      host_->matmul(w, hx.data(), n, hy.data());
      return upload(hy.data(), y, n * w.rows);
    }
    const DeviceWeight* d = &it->second;
    cudaStream_t s = stream_.get();
    const void* xa = x;
    if (d->bf16) {
      grow(xb_, size_t(n * w.cols) * 2);
      convert_rows(x, w.cols, xb_.as(), true, w.cols, n, w.cols, s);
      xa = xb_.as();
    }
    gemm_rm(blas_.get(), n, w.rows, w.cols, Mat{xa, dt(d->bf16), w.cols}, Mat{d->buf.as(), dt(d->bf16), w.cols}, true,
            y, CUDA_R_32F, w.rows);
  }

  void rmsnorm(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps) override {
    rmsnorm_rows(x, vec(w, d, 0), y, n, d, eps, stream_.get());
  }
  void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t d, float eps) override {
    layernorm_rows(x, vec(w, d, 0), vec(b, d, 1), y, n, d, eps, stream_.get());
  }
  void rope(backend::RopeLayout l, float* x, int64_t n, int64_t h, int64_t s, int64_t rd, int64_t p,
            const float* f) override {
    rope_rows(l == backend::RopeLayout::Interleaved, x, n, h, s, rd, p, vec(f, rd / 2, 0), stream_.get());
  }
  void silu_mul(const float* g, const float* u, float* out, int64_t n) override {
    gpu::silu_mul(g, u, out, n, stream_.get());
  }
  void add(float* acc, const float* x, int64_t n) override { add_into(acc, x, n, stream_.get()); }
  // The group-limited top-k on the GPU (router_topk.h); only the choices come down.
  void route(const float* l, const float* b, const RouterParams& p, int64_t n, int32_t* e, float* w) override {
    if (!gpu_router_ok(p)) {  // more experts or groups than the kernel's arrays hold
      host_tmp_.resize(size_t(n * p.n_experts));
      download(l, host_tmp_.data(), n * p.n_experts);
      return host_->route(host_tmp_.data(), b, p, n, e, w);
    }
    const int64_t k = n * p.top_k;
    grow(route_out_, size_t(k) * 8);
    int32_t* de = route_out_.as<int32_t>();
    float* dw = reinterpret_cast<float*>(de + k);
    route_tokens(l, b ? vec(b, p.n_experts, 0) : nullptr, p, n, de, dw, stream_.get());
    touch_host("route");
    check(cudaMemcpyAsync(e, de, size_t(k) * 4, cudaMemcpyDeviceToHost, stream_.get()), "route: download");
    check(cudaMemcpyAsync(w, dw, size_t(k) * 4, cudaMemcpyDeviceToHost, stream_.get()), "route: download");
    synchronize();
  }

  void cache_store(AttentionCache& cache, int64_t layer, int64_t pos0, int64_t n, const float* latent,
                   const float* k_rope) override {
    auto& c = static_cast<CudaCache&>(cache);
    cudaStream_t s = stream_.get();
    const int64_t R = c.shape.latent, rope = c.shape.rope;
    uint8_t* rows = c.kv_layer(layer) + uint64_t(pos0) * c.row_bytes;
    if (c.type == DType::F8_E4M3) return store_fp8_rows(latent, k_rope, n, c.fp8, rows, s);
    convert_rows(latent, R, rows, c.bf16(), c.row, n, R, s);
    convert_rows(k_rope, rope, rows + R * esize(c.bf16()), c.bf16(), c.row, n, rope, s);
  }

  void cache_store_index_key(AttentionCache& cache, int64_t layer, int64_t pos0, int64_t n, const float* keys) override {
    auto& c = static_cast<CudaCache&>(cache);
    const int64_t D = c.shape.index_key;
    check(cudaMemcpyAsync(c.idx_layer(layer) + pos0 * D, keys, size_t(n * D) * 4, cudaMemcpyDeviceToDevice,
                          stream_.get()),
          "cache_store_index_key");
  }

  void mla_attention(AttentionCache& cache, const backend::MlaArgs& a) override;
  void indexer_topk(AttentionCache& cache, const backend::IndexerArgs& a,
                    std::vector<std::vector<int32_t>>& selected) override;

  // Host blobs, copied to VRAM for this call only (the VRAM tier's resident experts go through
  // make_cuda_expert_runner instead).
  // x and y are device rows; the runner takes host rows (its staging is pinned), so they go
  // over and back. Only tests call this op: the model's experts go through the scheduler.
  void expert_ffn(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y) override {
    int64_t T = 0;
    for (int64_t i = 0; i < n_tasks; ++i)
      for (int64_t j = 0; j < tasks[i].n; ++j) T = std::max<int64_t>(T, tasks[i].tokens[j] + 1);
    std::vector<float> hx(size_t(T * g.hidden)), hy(hx.size());
    download(x, hx.data(), T * g.hidden);
    download(y, hy.data(), T * g.hidden);
    host_expert_ffn(g, tasks, n_tasks, hx.data(), hy.data());
    upload(hy.data(), y, T * g.hidden);
  }

  std::shared_ptr<DeviceContext> context() const { return ctx_; }
  // The ops' wait for the device, for a benchmark's timing.
  void synchronize() {
    stream_.sync("synchronize");
    graveyard_.clear();  // no launched graph uses them any more
  }
  GraphPolicyStats graph_stats() const { return policy_.stats(); }

  // One layer's attention block: recorded as a CUDA graph and launched at end_region when the
  // policy says so (decode steps that need nothing from the host), else run op by op.
  void begin_region(const backend::Region& r) override {
    if (in_region_) throw DeviceError("begin_region: a region is already open");
    host_touches_ = 0;
    key_ = RegionKey{r.layer, r.rows, r.sequences};
    if (policy_.begin(key_, r.decode) == RegionAction::Capture) {
      const cudaError_t e = cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeRelaxed);
      if (e != cudaSuccess) {
        cudaGetLastError();
        policy_.end_capture(CaptureOutcome::Failed);
        throw DeviceError(std::string("starting to record layer ") + std::to_string(r.layer) +
                          "'s attention as a CUDA graph: " + cudaGetErrorString(e) + "; --gpu-graphs off runs it op by op");
      }
      capturing_ = true;
    }
    in_region_ = true;
  }
  void end_region(bool completed) override {
    in_region_ = false;
    if (!capturing_) {
      // An unwinding region may have stopped before the op that needed the host: learn nothing.
      if (completed) policy_.end_eager(host_touches_ > 0);
      else policy_.abandon();
      return;
    }
    capturing_ = false;
    cudaGraph_t g = nullptr;
    const cudaError_t e = cudaStreamEndCapture(stream_.get(), &g);
    if (!completed) {  // unwinding: nothing to launch, and no throwing
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      policy_.abandon();
      return;
    }
    if (e != cudaSuccess || !g) {
      cudaGetLastError();
      policy_.end_capture(CaptureOutcome::Failed);
      throw DeviceError("recording layer " + std::to_string(key_.layer) + "'s attention as a CUDA graph failed (" +
                        cudaGetErrorString(e) + "); --gpu-graphs off runs it op by op");
    }
    cudaGraphExec_t& exec = execs_[key_];
    CaptureOutcome outcome = CaptureOutcome::Updated;
    if (exec) {
      cudaGraphExecUpdateResultInfo info{};
      if (cudaGraphExecUpdate(exec, g, &info) != cudaSuccess) {  // the ops changed shape: instantiate anew
        cudaGetLastError();
        cudaGraphExecDestroy(exec);
        exec = nullptr;
      }
    }
    cudaError_t le = cudaSuccess;
    if (!exec) {
      outcome = CaptureOutcome::Instantiated;
      le = cudaGraphInstantiate(&exec, g, 0);
      if (le != cudaSuccess) exec = nullptr;
    }
    if (le == cudaSuccess) le = cudaGraphLaunch(exec, stream_.get());
    cudaGraphDestroy(g);
    if (le != cudaSuccess) {
      cudaGetLastError();
      policy_.end_capture(CaptureOutcome::Failed);
      throw DeviceError("launching layer " + std::to_string(key_.layer) + "'s attention graph failed (" +
                        cudaGetErrorString(le) + "); --gpu-graphs off runs it op by op");
    }
    policy_.end_capture(outcome);
  }
  const Status& setup() const { return setup_; }
  uint64_t dense_bytes_on_host() const { return host_bytes_; }

 private:
  // Every host transfer passes here. In an eager region it marks the region as one that needs
  // the host (not to be recorded); inside a recording it cannot happen, since the policy records
  // only regions whose eager run needed nothing from the host, so it is an internal error.
  void touch_host(const char* what) {
    ++host_touches_;
    if (!capturing_) return;
    capturing_ = false;
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(stream_.get(), &g);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    policy_.end_capture(CaptureOutcome::Failed);
    throw DeviceError(std::string("internal error: ") + what + " in layer " + std::to_string(key_.layer) +
                      "'s recorded attention graph; --gpu-graphs off runs it op by op");
  }
  // Scratch that grows with the context: with headroom, and during a recording the old buffer
  // is kept until the next synchronisation, since ops recorded before may still use it.
  void grow(DeviceBuffer& b, size_t bytes) {
    if (bytes <= b.bytes()) return;
    if (capturing_) graveyard_.push_back(std::move(b));
    b.ensure(bytes + bytes / 4);
  }

  void host_expert_ffn(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y) {
    std::string why;
    if (!gpu_expert_geometry_ok(g, &why)) return host_->expert_ffn(g, tasks, n_tasks, x, y);
    experts_.forget_all();
    for (int64_t i = 0; i < n_tasks; ++i) {
      const Status s = experts_.make_resident(g, -1, tasks[i].blob);
      if (!s.ok()) {
        experts_.forget_all();
        return host_->expert_ffn(g, tasks, n_tasks, x, y);
      }
    }
    Status s = experts_.launch(g, tasks, n_tasks, x, y);
    if (s.ok()) s = experts_.wait();
    experts_.forget_all();
    if (!s.ok()) throw DeviceError("expert_ffn: " + s.error());
  }

  // A host vector [n] as the device sees it: its prepared copy, or (not prepared) a copy made
  // for this call in scratch slot `slot` (one per operand of an op).
  const float* vec(const float* v, int64_t n, int slot) {
    auto it = vectors_.find(v);
    if (it != vectors_.end() && it->second.bytes() >= size_t(n) * 4) return it->second.as<float>();
    DeviceBuffer& d = vec_tmp_[slot];
    d.ensure(size_t(n) * 4);
    upload(v, d.as<float>(), n);
    return d.as<float>();
  }

  // Packs `w` into its GPU form and copies it into `d`, charged under `what`.
  Status upload_dense(const WeightView& w, DeviceWeight& d, const std::string& what) {
    pack_dense_for_gpu(w, staging_);
    MT_TRY(ctx_->charge(what, staging_.size()));
    const Status a = d.buf.try_ensure(staging_.size());
    if (!a.ok()) {
      ctx_->vram.release(what, staging_.size());
      return a;
    }
    d.bf16 = gpu_dense_dtype(w.dtype) == DType::BF16;
    d.stored = w.dtype;
    d.rows = w.rows;
    d.cols = w.cols;
    // On this backend's stream and waited for: the stream does not wait for the legacy
    // default stream, so a plain cudaMemcpy could still be landing when an op reads the weight.
    MT_TRY(status_of(cudaMemcpyAsync(d.buf.as(), staging_.data(), staging_.size(), cudaMemcpyHostToDevice,
                                     stream_.get()),
                     "copying a weight to VRAM"));
    return status_of(cudaStreamSynchronize(stream_.get()), "copying a weight to VRAM");
  }

  // Scores, softmax and the weighted latent of M query rows (qcat, [M, row]) over T cache rows
  // (keys, [T, row]): ctx [M, latent] fp32.
  void attend(const void* qcat, int64_t M, const void* keys, int64_t T, int64_t row, int64_t R, bool causal,
              int64_t first_valid, int64_t heads, float scale, float* ctx) {
    cudaStream_t s = stream_.get();
    const bool cb = cache_type_ != DType::F32;
    grow(scores_, size_t(M * T) * 4);
    grow(probs_, size_t(M * T) * esize(cb));
    gemm_rm(blas_.get(), M, T, row, Mat{qcat, dt(cb), row}, Mat{keys, dt(cb), row}, true, scores_.as(), CUDA_R_32F, T);
    softmax_rows(scores_.as<float>(), T, M, T, causal, first_valid, heads, scale, probs_.as(), cb, T, s);
    gemm_rm(blas_.get(), M, R, T, Mat{probs_.as(), dt(cb), T}, Mat{keys, dt(cb), row}, false, ctx, CUDA_R_32F, R);
  }

  std::unique_ptr<backend::Backend> host_;
  std::shared_ptr<DeviceContext> ctx_;
  DType cache_type_ = DType::BF16;
  std::string name_;
  Stream stream_;
  Cublas blas_;
  CudaExperts experts_;  // the expert_ffn op's transient copies
  std::unordered_map<const uint8_t*, DeviceWeight> weights_;  // prepared model weights, by address
  std::vector<DeviceWeight> kvb_;                              // per layer
  std::unordered_map<const float*, DeviceBuffer> vectors_;     // prepared model vectors, by address
  std::shared_ptr<ActivationPool> pool_;
  std::vector<float> host_tmp_;                                // host side of ops that run there
  // CUDA graphs of the attention regions.
  GraphPolicy policy_;
  std::map<RegionKey, cudaGraphExec_t> execs_;
  RegionKey key_;
  bool in_region_ = false, capturing_ = false;
  int64_t host_touches_ = 0;
  std::vector<DeviceBuffer> graveyard_;
  DeviceBuffer blas_workspace_;
  std::vector<uint8_t> staging_;
  Status setup_ = ok_status();
  uint64_t keep_free_ = 0, host_bytes_ = 0;
  // Per-op scratch, grown to the largest call and reused.
  DeviceBuffer xb_, qw_, qabs_, qcat_, ctx_f_, ctx_w_, scores_, probs_, gathered_, idx_dev_, sort_keys_, sort_vals_in_,
      sort_vals_out_, sorted_, sort_temp_;
  DeviceBuffer vec_tmp_[2], deq_, route_out_;
};

void CudaBackend::mla_attention(AttentionCache& cache, const backend::MlaArgs& a) {
  auto& c = static_cast<CudaCache&>(cache);
  cudaStream_t s = stream_.get();
  const MlaHeadDims& d = a.dims;
  const int64_t H = a.heads, n = a.n, qk = d.nope + d.rope, R = d.latent, V = d.v, row = c.row;
  if (size_t(a.layer) >= kvb_.size() || kvb_[size_t(a.layer)].buf.bytes() == 0)
    throw DeviceError("mla_attention: layer " + std::to_string(a.layer) + "'s kv_b is not in VRAM (" +
                      (setup_.ok() ? std::string("never loaded") : setup_.error()) + ")");
  const DeviceWeight& kvb = kvb_[size_t(a.layer)];
  const bool wb = kvb.bf16, cb = c.bf16();

  // The queries (device rows), in kv_b's type for the absorption and in the cache's for the scores.
  const void* qw = a.q;
  if (wb) {
    grow(qw_, size_t(n * H * qk) * 2);
    convert_rows(a.q, n * H * qk, qw_.as(), true, n * H * qk, 1, n * H * qk, s);
    qw = qw_.as();
  }
  // q_abs[t, h] = q_nope[t, h] W_UK_h, W_UK_h = kv_b rows [h (nope + v), + nope) : [nope, R].
  grow(qabs_, size_t(n * H * R) * 4);
  gemm_rm(blas_.get(), n, R, d.nope, Mat{qw, dt(wb), H * qk, qk}, Mat{kvb.buf.as(), dt(wb), R, (d.nope + V) * R}, false,
          qabs_.as(), CUDA_R_32F, H * R, R, H);
  grow(qcat_, size_t(n * H * row) * esize(cb));
  convert_rows(qabs_.as<float>(), R, qcat_.as(), cb, row, n * H, R, s);
  convert_rows(a.q + d.nope, qk, qcat_.as<uint8_t>() + R * esize(cb), cb, row, n * H, d.rope, s);

  grow(ctx_f_, size_t(n * H * R) * 4);
  const uint8_t* keys = c.kv_layer(a.layer);
  if (!a.selected && c.type == DType::F8_E4M3) {  // the rows attended to, as BF16
    grow(deq_, size_t((a.pos0 + n) * row) * 2);
    load_fp8_rows(keys, c.fp8, nullptr, a.pos0 + n, deq_.as(), row, s);
    keys = deq_.as<uint8_t>();
  }
  if (!a.selected) {
    // Queries in chunks, so the scores of a long prompt stay within kScoreBytes; each chunk
    // scores only the keys its last query can see.
    const int64_t per_query = H * (a.pos0 + n) * int64_t(4 + esize(cb));
    const int64_t chunk = std::clamp<int64_t>(kScoreBytes / std::max<int64_t>(per_query, 1), 1, n);
    for (int64_t t0 = 0; t0 < n; t0 += chunk) {
      const int64_t m = std::min(chunk, n - t0);
      attend(qcat_.as<uint8_t>() + t0 * H * row * esize(cb), m * H, keys, a.pos0 + t0 + m, row, R, true,
             a.pos0 + t0 + 1, H, a.scale, ctx_f_.as<float>() + t0 * H * R);
    }
  } else {
    // Every selection in one upload; each query gathers its rows into its own region. No
    // synchronisation between queries: the stream orders the reuse of the score buffers.
    std::vector<int32_t> all;
    std::vector<int64_t> first(size_t(n) + 1, 0);
    int64_t widest = 1;
    for (int64_t t = 0; t < n; ++t) {
      const std::vector<int32_t>& sel = (*a.selected)[size_t(t)];
      all.insert(all.end(), sel.begin(), sel.end());
      first[size_t(t) + 1] = static_cast<int64_t>(all.size());
      widest = std::max<int64_t>(widest, static_cast<int64_t>(sel.size()));
    }
    grow(idx_dev_, std::max<size_t>(all.size(), 1) * 4);
    grow(gathered_, size_t(widest * row) * esize(cb));
    grow(scores_, size_t(H * widest) * 4);
    grow(probs_, size_t(H * widest) * esize(cb));
    touch_host("mla_attention's selection");
    check(cudaMemcpyAsync(idx_dev_.as(), all.data(), all.size() * 4, cudaMemcpyHostToDevice, s),
          "mla_attention: upload the selection");
    for (int64_t t = 0; t < n; ++t) {
      const int64_t k = first[size_t(t) + 1] - first[size_t(t)];
      if (k == 0) {  // attends to nothing: a zero context, as the reference's empty sum
        check(cudaMemsetAsync(ctx_f_.as<float>() + t * H * R, 0, size_t(H * R) * 4, s), "mla_attention: empty selection");
        continue;
      }
      if (c.type == DType::F8_E4M3)
        load_fp8_rows(keys, c.fp8, idx_dev_.as<int32_t>() + first[size_t(t)], k, gathered_.as(), row, s);
      else
        gather_rows(keys, row, esize(cb), idx_dev_.as<int32_t>() + first[size_t(t)], k, gathered_.as(), row, s);
      attend(qcat_.as<uint8_t>() + t * H * row * esize(cb), H, gathered_.as(), k, row, R, false, 0, H, a.scale,
             ctx_f_.as<float>() + t * H * R);
    }
  }
  const void* ctxw = ctx_f_.as();
  if (wb) {
    grow(ctx_w_, size_t(n * H * R) * 2);
    convert_rows(ctx_f_.as<float>(), R, ctx_w_.as(), true, R, n * H, R, s);
    ctxw = ctx_w_.as();
  }
  // out[t, h] = ctx[t, h] W_UV_h^T, W_UV_h = kv_b rows [h (nope + v) + nope, + v) : [v, R],
  // straight into the device output.
  gemm_rm(blas_.get(), n, V, R, Mat{ctxw, dt(wb), H * R, R},
          Mat{kvb.buf.as<uint8_t>() + d.nope * R * esize(wb), dt(wb), R, (d.nope + V) * R}, true, a.out, CUDA_R_32F,
          H * V, V, H);
}

void CudaBackend::indexer_topk(AttentionCache& cache, const backend::IndexerArgs& a,
                               std::vector<std::vector<int32_t>>& selected) {
  auto& c = static_cast<CudaCache&>(cache);
  cudaStream_t s = stream_.get();
  const int64_t n = a.n, pos0 = a.pos0, nh = a.heads, D = a.dim, total = pos0 + n;
  selected.assign(size_t(n), {});
  if (pos0 + n <= a.top_k) {  // every visible key of every query: no scores needed
    for (int64_t t = 0; t < n; ++t)
      for (int64_t p = 0; p <= pos0 + t; ++p) selected[size_t(t)].push_back(static_cast<int32_t>(p));
    return;
  }
  const float* q = a.q;  // device rows
  const float* hw = a.head_weight;
  // G [m * heads, keys] = q k^T, fp32 throughout (the selection must order scores as the CPU
  // does), for chunks of m queries so that G stays within kScoreBytes.
  const int64_t chunk = std::clamp<int64_t>(kScoreBytes / std::max<int64_t>(nh * total * 4, 1), 1, n);
  grow(scores_, size_t(chunk * nh * total) * 4);
  grow(sort_keys_, size_t(chunk * total) * 4);
  float* score = sort_keys_.as<float>();
  size_t temp_bytes = 0, temp2 = 0;
  check(cub::DeviceRadixSort::SortPairsDescending(nullptr, temp_bytes, static_cast<const float*>(nullptr),
                                                  static_cast<float*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                  static_cast<int32_t*>(nullptr), static_cast<int>(total), 0, 32, s),
        "indexer: top-k temporary size");
  check(cub::DeviceRadixSort::SortKeys(nullptr, temp2, static_cast<const int32_t*>(nullptr),
                                       static_cast<int32_t*>(nullptr), static_cast<int>(a.top_k), 0, 32, s),
        "indexer: sort temporary size");
  grow(sort_temp_, std::max(temp_bytes, temp2));
  grow(sort_vals_in_, size_t(total) * 4);
  grow(sort_vals_out_, size_t(total) * 4);
  grow(probs_, size_t(total) * 4);  // the sorted scores (unused)
  grow(sorted_, size_t(n * a.top_k) * 4);
  iota(sort_vals_in_.as<int32_t>(), total, s);
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t m = std::min(chunk, n - t0), keys = pos0 + t0 + m;
    gemm_rm(blas_.get(), m * nh, keys, D, Mat{q + t0 * nh * D, CUDA_R_32F, D}, Mat{c.idx_layer(a.layer), CUDA_R_32F, D},
            true, scores_.as(), CUDA_R_32F, keys);
    indexer_scores(scores_.as<float>(), keys, hw + t0 * nh, m, nh, pos0 + t0 + 1, a.scale, score, s);
    for (int64_t t = t0; t < t0 + m; ++t) {
      const int64_t visible = pos0 + t + 1;
      if (visible <= a.top_k) continue;  // filled on the host below
      // Stable: equal scores keep position order, so ties go to the lower position (cpu::topk).
      size_t tb = sort_temp_.bytes();
      check(cub::DeviceRadixSort::SortPairsDescending(sort_temp_.as(), tb, score + (t - t0) * keys, probs_.as<float>(),
                                                      sort_vals_in_.as<int32_t>(), sort_vals_out_.as<int32_t>(),
                                                      static_cast<int>(visible), 0, 32, s),
            "indexer: top-k sort");
      tb = sort_temp_.bytes();
      check(cub::DeviceRadixSort::SortKeys(sort_temp_.as(), tb, sort_vals_out_.as<int32_t>(),
                                           sorted_.as<int32_t>() + t * a.top_k, static_cast<int>(a.top_k), 0, 32, s),
            "indexer: position order");
    }
  }
  std::vector<int32_t> all(size_t(n * a.top_k));
  touch_host("indexer_topk");
  check(cudaMemcpyAsync(all.data(), sorted_.as(), all.size() * 4, cudaMemcpyDeviceToHost, s), "indexer: download");
  synchronize();
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int32_t>& sel = selected[size_t(t)];
    const int64_t visible = pos0 + t + 1;
    if (visible <= a.top_k) {
      for (int64_t p = 0; p < visible; ++p) sel.push_back(static_cast<int32_t>(p));
    } else {
      sel.assign(all.begin() + t * a.top_k, all.begin() + (t + 1) * a.top_k);
    }
  }
}

}  // namespace

Result<std::unique_ptr<backend::Backend>> make_cuda_backend(std::unique_ptr<backend::Backend> host, const CudaOptions& o) {
  const GpuInfo info = probe_gpu();
  if (!info.available) return make_error("--gpu on: no usable GPU (" + info.reason + ")");
  if (o.cache_dtype != DType::BF16 && o.cache_dtype != DType::F32 && o.cache_dtype != DType::F8_E4M3)
    return make_error("the CUDA backend's attention cache is bf16, f32 or fp8");
  const uint64_t free_b = uint64_t(info.free_bytes);
  uint64_t limit = o.vram_limit ? o.vram_limit : (free_b > kVramReserve ? free_b - kVramReserve : 0);
  if (limit == 0) return make_error("--gpu on: " + info.name + " has less than 1 GiB of free memory");
  auto ctx = std::make_shared<DeviceContext>(info, limit);
  try {
    return std::unique_ptr<backend::Backend>(std::make_unique<CudaBackend>(std::move(host), o, std::move(ctx)));
  } catch (const DeviceError& e) {
    return make_error(std::string("--gpu on: ") + e.what());
  }
}

Result<std::unique_ptr<ExpertRunner>> make_cuda_expert_runner(backend::Backend& be) {
  auto* cb = dynamic_cast<CudaBackend*>(&be);
  if (!cb) return make_error(std::string("the VRAM expert runner needs the CUDA backend, not ") + be.name());
  try {
    return make_expert_runner(cb->context());
  } catch (const DeviceError& e) {
    return make_error(e.what());
  }
}

const TierBudget* vram_accounting(const backend::Backend& be) {
  auto* cb = dynamic_cast<const CudaBackend*>(&be);
  return cb ? &cb->context()->vram : nullptr;
}

Status setup_status(const backend::Backend& be) {
  auto* cb = dynamic_cast<const CudaBackend*>(&be);
  return cb ? cb->setup() : ok_status();
}

uint64_t dense_bytes_on_host(const backend::Backend& be) {
  auto* cb = dynamic_cast<const CudaBackend*>(&be);
  return cb ? cb->dense_bytes_on_host() : 0;
}

bool graph_stats(const backend::Backend& be, GraphPolicyStats& out) {
  auto* cb = dynamic_cast<const CudaBackend*>(&be);
  if (cb) out = cb->graph_stats();
  return cb != nullptr;
}

void synchronize(backend::Backend& be) {
  if (auto* cb = dynamic_cast<CudaBackend*>(&be)) cb->synchronize();
}

}  // namespace mt::gpu
