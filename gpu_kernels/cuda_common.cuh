// CUDA plumbing shared by the backend and the expert runner: errors, RAII device and pinned
// buffers, events, and row-major GEMMs on cuBLAS.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "runtime/core/status.h"

namespace mt::gpu {

// A failed CUDA or cuBLAS call inside a backend op, which cannot return a Status (ops do not
// fail on well-formed arguments); the CLI reports it as one line and exits non-zero.
struct DeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw DeviceError(std::string("CUDA: ") + what + ": " + cudaGetErrorString(e));
}
inline void check(cublasStatus_t e, const char* what) {
  if (e != CUBLAS_STATUS_SUCCESS)
    throw DeviceError(std::string("cuBLAS: ") + what + ": status " + std::to_string(static_cast<int>(e)));
}
inline Status status_of(cudaError_t e, const std::string& what) {
  return e == cudaSuccess ? ok_status() : make_error(what + ": " + cudaGetErrorString(e));
}

inline cudaError_t device_alloc(void** p, size_t n) { return cudaMalloc(p, n); }
inline cudaError_t pinned_alloc(void** p, size_t n) { return cudaMallocHost(p, n); }

// Memory from one CUDA allocator, freed on destruction. ensure() grows it (contents lost),
// never shrinks; try_ensure() says when the allocator refused.
template <cudaError_t (*Alloc)(void**, size_t), cudaError_t (*Free)(void*)>
class CudaMemory {
 public:
  CudaMemory() = default;
  ~CudaMemory() { reset(); }
  CudaMemory(CudaMemory&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  CudaMemory& operator=(CudaMemory&& o) noexcept {
    if (this != &o) reset(), p_ = o.p_, n_ = o.n_, o.p_ = nullptr, o.n_ = 0;
    return *this;
  }
  CudaMemory(const CudaMemory&) = delete;
  CudaMemory& operator=(const CudaMemory&) = delete;
  Status try_ensure(size_t bytes) {
    if (bytes <= n_) return ok_status();
    reset();
    if (Alloc(&p_, bytes) != cudaSuccess) {
      cudaGetLastError();
      p_ = nullptr;
      return make_error("allocating " + std::to_string(bytes) + " bytes of " +
                        (Alloc == &pinned_alloc ? "pinned host memory" : "VRAM") + " failed");
    }
    n_ = bytes;
    return ok_status();
  }
  void ensure(size_t bytes) {
    const Status s = try_ensure(bytes);
    if (!s.ok()) throw DeviceError(s.error());
  }
  void reset() {
    if (p_) Free(p_);
    p_ = nullptr, n_ = 0;
  }
  template <class T = void>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

using DeviceBuffer = CudaMemory<&device_alloc, &cudaFree>;   // VRAM
using PinnedBuffer = CudaMemory<&pinned_alloc, &cudaFreeHost>;  // page-locked host memory: asynchronous copies

class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() { cudaStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync(const char* what) const { check(cudaStreamSynchronize(s_), what); }

 private:
  cudaStream_t s_{};
};

class Event {
 public:
  Event() { check(cudaEventCreate(&e_), "cudaEventCreate"); }
  ~Event() { cudaEventDestroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_{};
};

class Cublas {
 public:
  explicit Cublas(cudaStream_t s) {
    check(cublasCreate(&h_), "cublasCreate");
    check(cublasSetStream(h_, s), "cublasSetStream");
    // FP32 GEMMs stay FP32 (no TF32): the F32 paths must match the reference to 1e-5.
    check(cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  }
  ~Cublas() { cublasDestroy(h_); }
  Cublas(const Cublas&) = delete;
  Cublas& operator=(const Cublas&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_{};
};

// A row-major matrix operand: element (i, j) at ptr[i * ld + j], of `type`.
struct Mat {
  const void* ptr;
  cudaDataType type;
  int64_t ld;
  int64_t stride = 0;  // between batches (elements)
};

// Row-major C[M, N] = A[M, K] * B^T when b_nk (B stored [N, K]), else A * B (B stored [K, N]);
// fp32 accumulation. `batch` > 1: strided batches. cuBLAS is column-major, so this computes
// C^T = op(B) A^T with the operands swapped.
void gemm_rm(cublasHandle_t h, int64_t M, int64_t N, int64_t K, const Mat& A, const Mat& B, bool b_nk, void* C,
             cudaDataType ct, int64_t ldc, int64_t stride_c = 0, int64_t batch = 1);

}  // namespace mt::gpu
