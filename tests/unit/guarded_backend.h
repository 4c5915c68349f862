// A backend that enforces the seam's memory contract on the CPU, where no GPU can: it wraps
// another backend, and its activation memory is readable only while one of its own ops runs
// (mprotect PROT_NONE otherwise), so a graph that reads or writes an activation directly, as it
// could not on a GPU, faults. Every activation pointer an op receives must lie, with its whole
// extent, inside a live buffer of this backend. What breaks the contract without faulting is
// listed in violations(); constant vectors used without prepare_vector (legal, but a GPU then
// copies them per call) in unprepared(). Regions (Backend::begin_region) are checked too: no
// upload or download inside one, no nesting; ops inside one whose results go to the host (which
// keep a GPU from recording the region) are listed in host_results_in_regions().
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"

namespace mt::test {

class GuardedBackend final : public backend::Backend {
 public:
  explicit GuardedBackend(std::unique_ptr<backend::Backend> inner) : inner_(std::move(inner)) {
    name_ = std::string("guarded ") + inner_->name();
  }

  const std::vector<std::string>& violations() const { return violations_; }
  const std::vector<std::string>& unprepared() const { return unprepared_; }
  const std::vector<std::string>& host_results_in_regions() const { return host_in_region_; }
  int64_t regions(bool decode) const { return decode ? decode_regions_ : other_regions_; }

  void begin_region(const backend::Region& r) override {
    if (in_region_) violations_.push_back("begin_region: nested in another region");
    in_region_ = true;
    ++(r.decode ? decode_regions_ : other_regions_);
    inner_->begin_region(r);
  }
  void end_region(bool completed) override {
    if (!in_region_) violations_.push_back("end_region: no region open");
    in_region_ = false;
    inner_->end_region(completed);
  }
  int64_t live_buffers() const { return static_cast<int64_t>(regions_.size()); }

  const char* name() const override { return name_.c_str(); }
  bool supports(backend::Op op, DType w) const override { return inner_->supports(op, w); }
  bool supports_experts(ExpertQuant q) const override { return inner_->supports_experts(q); }
  void prepare_weight(const WeightView& w) override { inner_->prepare_weight(w); }
  DType cache_dtype() const override { return inner_->cache_dtype(); }
  void prepare_vector(const float* v, int64_t n) override {
    prepared_[v] = n;
    inner_->prepare_vector(v, n);
  }
  void load_attention_weights(int64_t l, const WeightView& w, const MlaHeadDims& d) override {
    inner_->load_attention_weights(l, w, d);
  }
  uint64_t weight_bytes() const override { return inner_->weight_bytes(); }
  std::unique_ptr<backend::AttentionCache> make_cache(const backend::CacheShape& s, int64_t m) override {
    return inner_->make_cache(s, m);
  }

  std::unique_ptr<backend::ActivationBuffer> alloc_activations(int64_t n) override {
    return std::make_unique<Region>(*this, n);
  }
  void upload(const float* host, float* dst, int64_t n) override {
    if (in_region_) violations_.push_back("upload inside a region");
    Open o(*this, "upload", {{dst, n}});
    inner_->upload(host, dst, n);
  }
  void download(const float* src, float* host, int64_t n) override {
    if (in_region_) violations_.push_back("download inside a region");
    Open o(*this, "download", {{src, n}});
    inner_->download(src, host, n);
  }
  void copy_rows(const float* src, int64_t ls, float* dst, int64_t ld, int64_t rows, int64_t cols) override {
    Open o(*this, "copy_rows", {{src, rows ? (rows - 1) * ls + cols : 0}, {dst, rows ? (rows - 1) * ld + cols : 0}});
    inner_->copy_rows(src, ls, dst, ld, rows, cols);
  }
  void zero(float* dst, int64_t n) override {
    Open o(*this, "zero", {{dst, n}});
    inner_->zero(dst, n);
  }

  void embed(const WeightView& t, const int32_t* ids, int64_t n, float* out) override {
    Open o(*this, "embed", {{out, n * t.cols}});
    inner_->embed(t, ids, n, out);
  }
  void matmul(const WeightView& w, const float* x, int64_t n, float* y) override {
    Open o(*this, "matmul", {{x, n * w.cols}, {y, n * w.rows}});
    inner_->matmul(w, x, n, y);
  }
  void rmsnorm(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps) override {
    vector_used("rmsnorm", w, d);
    Open o(*this, "rmsnorm", {{x, n * d}, {y, n * d}});
    inner_->rmsnorm(x, w, y, n, d, eps);
  }
  void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t d, float eps) override {
    vector_used("layernorm", w, d);
    vector_used("layernorm", b, d);
    Open o(*this, "layernorm", {{x, n * d}, {y, n * d}});
    inner_->layernorm(x, w, b, y, n, d, eps);
  }
  void rope(backend::RopeLayout l, float* x, int64_t n, int64_t h, int64_t s, int64_t rd, int64_t p,
            const float* f) override {
    vector_used("rope", f, rd / 2);
    Open o(*this, "rope", {{x, n * h ? (n * h - 1) * s + rd : 0}});
    inner_->rope(l, x, n, h, s, rd, p, f);
  }
  void silu_mul(const float* g, const float* u, float* out, int64_t n) override {
    Open o(*this, "silu_mul", {{g, n}, {u, n}, {out, n}});
    inner_->silu_mul(g, u, out, n);
  }
  void add(float* acc, const float* x, int64_t n) override {
    Open o(*this, "add", {{acc, n}, {x, n}});
    inner_->add(acc, x, n);
  }
  void route(const float* l, const float* b, const RouterParams& p, int64_t n, int32_t* e, float* w) override {
    if (b) vector_used("route", b, p.n_experts);
    if (in_region_) host_in_region_.push_back("route");
    Open o(*this, "route", {{l, n * p.n_experts}});
    inner_->route(l, b, p, n, e, w);
  }
  void cache_store(backend::AttentionCache& c, int64_t l, int64_t p0, int64_t n, const float* lat,
                   const float* kr) override {
    Open o(*this, "cache_store", {{lat, 1}, {kr, 1}});
    inner_->cache_store(c, l, p0, n, lat, kr);
  }
  void cache_store_index_key(backend::AttentionCache& c, int64_t l, int64_t p0, int64_t n, const float* k) override {
    Open o(*this, "cache_store_index_key", {{k, 1}});
    inner_->cache_store_index_key(c, l, p0, n, k);
  }
  void mla_attention(backend::AttentionCache& c, const backend::MlaArgs& a) override {
    const int64_t qk = a.dims.nope + a.dims.rope;
    Open o(*this, "mla_attention", {{a.q, a.n * a.heads * qk}, {a.out, a.n * a.heads * a.dims.v}});
    inner_->mla_attention(c, a);
  }
  void indexer_topk(backend::AttentionCache& c, const backend::IndexerArgs& a,
                    std::vector<std::vector<int32_t>>& s) override {
    if (in_region_) host_in_region_.push_back("indexer_topk");
    Open o(*this, "indexer_topk", {{a.q, a.n * a.heads * a.dim}, {a.head_weight, a.n * a.heads}});
    inner_->indexer_topk(c, a, s);
  }
  void expert_ffn(const ExpertGeometry& g, const ExpertTask* t, int64_t n, const float* x, float* y) override {
    if (in_region_) host_in_region_.push_back("expert_ffn");
    Open o(*this, "expert_ffn", {{x, 1}, {y, 1}});
    inner_->expert_ffn(g, t, n, x, y);
  }

 private:
  // One mapping per buffer, inaccessible unless an op of this backend is running.
  class Region final : public backend::ActivationBuffer {
   public:
    Region(GuardedBackend& owner, int64_t n) : ActivationBuffer(nullptr, n), owner_(owner) {
      const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
      bytes_ = std::max<size_t>((static_cast<size_t>(n) * sizeof(float) + page - 1) / page * page, page);
      void* p = mmap(nullptr, bytes_, owner_.open_ ? PROT_READ | PROT_WRITE : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
      if (p == MAP_FAILED) throw std::runtime_error("GuardedBackend: mmap failed");
      reset(static_cast<float*>(p), n);
      owner_.regions_.insert(this);
    }
    ~Region() override {
      owner_.regions_.erase(this);
      munmap(data(), bytes_);
    }
    void protect(bool open) const { mprotect(data(), bytes_, open ? PROT_READ | PROT_WRITE : PROT_NONE); }
    bool contains(const float* p, int64_t n) const { return p >= data() && p + n <= data() + size(); }

   private:
    GuardedBackend& owner_;
    size_t bytes_ = 0;
  };

  struct Extent {
    const float* p;
    int64_t n;
  };
  // Checks an op's activation arguments and opens every buffer for the op's duration.
  class Open {
   public:
    Open(GuardedBackend& b, const char* op, std::initializer_list<Extent> args) : b_(b) {
      for (const Extent& e : args)
        if (!std::any_of(b_.regions_.begin(), b_.regions_.end(), [&](const Region* r) { return r->contains(e.p, e.n); }))
          b_.violations_.push_back(std::string(op) + ": an activation outside this backend's memory");
      b_.set_open(true);
    }
    ~Open() { b_.set_open(false); }

   private:
    GuardedBackend& b_;
  };
  void set_open(bool open) {
    open_ = open;
    for (const Region* r : regions_) r->protect(open);
  }
  void vector_used(const char* op, const float* v, int64_t n) {
    const auto it = prepared_.find(v);
    if (it == prepared_.end() || it->second < n)
      unprepared_.push_back(std::string(op) + ": a constant vector that was not prepared");
  }

  std::unique_ptr<backend::Backend> inner_;
  std::string name_;
  std::set<const Region*> regions_;
  std::map<const float*, int64_t> prepared_;
  std::vector<std::string> violations_, unprepared_, host_in_region_;
  bool open_ = false, in_region_ = false;
  int64_t decode_regions_ = 0, other_regions_ = 0;
};

}  // namespace mt::test
