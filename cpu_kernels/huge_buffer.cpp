// See huge_buffer.h.
#include "cpu_kernels/huge_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace mt::cpu {

namespace {
constexpr size_t kHuge = size_t{2} << 20;
}

HugeBuffer::HugeBuffer(size_t bytes) : bytes_(bytes) {
  const size_t n = std::max(kHuge, (bytes + kHuge - 1) / kHuge * kHuge);
  p_ = static_cast<uint8_t*>(std::aligned_alloc(kHuge, n));
  if (!p_) throw std::bad_alloc();
  madvise(p_, n, MADV_HUGEPAGE);  // a request: without THP the buffer is still correct, on 4 KiB pages
  std::memset(p_, 0, n);
}

HugeBuffer::~HugeBuffer() { std::free(p_); }

HugeBuffer::HugeBuffer(HugeBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

HugeBuffer& HugeBuffer::operator=(HugeBuffer&& o) noexcept {
  if (this != &o) {
    std::free(p_);
    p_ = std::exchange(o.p_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

}  // namespace mt::cpu
