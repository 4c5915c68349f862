#include "runtime/core/aligned_buffer.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <new>

namespace mt {

namespace {
constexpr size_t kAlign = 4096;
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

AlignedBuffer::AlignedBuffer(size_t bytes) : n_(bytes) {
  if (bytes == 0) return;
  if (bytes > SIZE_MAX - kAlign) throw std::bad_alloc();
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  // Weights the kernels stream sit in these: on 4 KiB pages a GGUF's row tiles lost 3-17% of a
  // decode token (the lm_head 9-26%) to TLB misses against 2 MiB pages (docs/benchmarks.md), so
  // big buffers start on a 2 MiB boundary and ask for transparent huge pages (best effort: a
  // kernel with THP off keeps 4 KiB pages).
  const bool huge = rounded >= kHugePage;
  void* p = nullptr;
  if (posix_memalign(&p, huge ? kHugePage : kAlign, rounded) != 0) throw std::bad_alloc();
  p_ = static_cast<uint8_t*>(p);
  if (huge) ::madvise(p_, rounded, MADV_HUGEPAGE);
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& o) noexcept : p_(o.p_), n_(o.n_) {
  o.p_ = nullptr;
  o.n_ = 0;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    std::free(p_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}

AlignedBuffer::~AlignedBuffer() { std::free(p_); }

}  // namespace mt
