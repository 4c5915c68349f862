#include "cpu_kernels/onednn_gemm.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <map>
#include <mutex>
#include <tuple>

namespace mt::cpu {

namespace {

using dt = dnnl::memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool>;

// C[M, N] (row stride ldc, fp32) = A[M, K] (row-major) x W[N, K]^T (row-major).
dnnl::matmul::primitive_desc make_pd(const OnednnGemm& k) {
  const dt wdt = k.bf16 ? dt::bf16 : dt::f32;
  dnnl::memory::desc a({k.M, k.K}, wdt, dnnl::memory::dims{k.K, 1});
  dnnl::memory::desc b({k.K, k.N}, wdt, dnnl::memory::dims{1, k.K});
  dnnl::memory::desc c({k.M, k.N}, dt::f32, dnnl::memory::dims{k.ldc, 1});
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), engine());
}

struct Cached {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

// The primitive cache: oneDNN's primitive creation costs milliseconds, a prompt reuses a few
// shapes many times. Bounded, guarded by a mutex (callers may run on several threads).
std::mutex g_cache_mu;
std::map<Key, Cached>& cache() {
  static std::map<Key, Cached> c;
  return c;
}

}  // namespace

bool onednn_bf16_supported() {
  static const bool ok = [] {
    try {
      make_pd({16, 64, 64, 64, true});
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

void onednn_gemm(const OnednnGemm& k, const void* A, const void* W, float* C) {
  Cached cm;
  {
    std::lock_guard<std::mutex> lk(g_cache_mu);
    auto& c = cache();
    const Key key{k.M, k.K, k.N, k.ldc, k.bf16};
    auto it = c.find(key);
    if (it == c.end()) {
      if (c.size() > 512) c.clear();
      auto pd = make_pd(k);
      it = c.emplace(key, Cached{pd, dnnl::matmul(pd)}).first;
    }
    cm = it->second;
  }
  dnnl::stream s(engine());
  dnnl::memory am(cm.pd.src_desc(), engine(), const_cast<void*>(A));
  dnnl::memory bm(cm.pd.weights_desc(), engine(), const_cast<void*>(W));
  dnnl::memory cmem(cm.pd.dst_desc(), engine(), C);
  cm.prim.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cmem}});
  s.wait();
}

}  // namespace mt::cpu
