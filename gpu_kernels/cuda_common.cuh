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

// Device memory, freed on destruction. ensure() grows it (contents lost), never shrinks.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { ensure(bytes); }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) reset(), p_ = o.p_, n_ = o.n_, o.p_ = nullptr, o.n_ = 0;
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  // Status form, for allocations that may legitimately run out (weights, caches).
  Status try_ensure(size_t bytes) {
    if (bytes <= n_) return ok_status();
    reset();
    if (cudaMalloc(&p_, bytes) != cudaSuccess) {
      cudaGetLastError();
      p_ = nullptr;
      return make_error("cudaMalloc of " + std::to_string(bytes) + " bytes failed");
    }
    n_ = bytes;
    return ok_status();
  }
  void ensure(size_t bytes) {
    const Status s = try_ensure(bytes);
    if (!s.ok()) throw DeviceError(s.error());
  }
  void reset() {
    if (p_) cudaFree(p_);
    p_ = nullptr, n_ = 0;
  }
  template <class T = void>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

// Page-locked host memory, so copies run asynchronously on a stream.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { reset(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void ensure(size_t bytes) {
    if (bytes <= n_) return;
    reset();
    check(cudaMallocHost(&p_, bytes), "cudaMallocHost (pinned staging)");
    n_ = bytes;
  }
  void reset() {
    if (p_) cudaFreeHost(p_);
    p_ = nullptr, n_ = 0;
  }
  template <class T = void>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

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
