#include "runtime/core/aligned_buffer.h"

#include <cstdint>
#include <cstdlib>
#include <new>

namespace mt {

namespace {
constexpr size_t kAlign = 4096;
}  // namespace

AlignedBuffer::AlignedBuffer(size_t bytes) : n_(bytes) {
  if (bytes == 0) return;
  if (bytes > SIZE_MAX - kAlign) throw std::bad_alloc();
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  p_ = static_cast<uint8_t*>(std::aligned_alloc(kAlign, rounded));
  if (!p_) throw std::bad_alloc();
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
