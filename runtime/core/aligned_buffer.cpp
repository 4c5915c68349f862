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

AlignedBuffer::AlignedBuffer(size_t bytes, bool huge_pages) : n_(bytes) {
  if (bytes == 0) return;
  if (bytes > SIZE_MAX - kAlign) throw std::bad_alloc();
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  const bool huge = huge_pages && rounded >= kHugePage;
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
