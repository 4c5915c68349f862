// An owned, 4096-aligned byte buffer: expert blobs read with O_DIRECT, a GGUF's row tiles, a
// store's dense weights.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mt {

// RAII 4096-aligned buffer (the allocation is rounded up to a multiple of 4096; zero-size
// buffers hold nullptr); from 2 MiB up, 2 MiB-aligned with transparent huge pages requested.
// Throws std::bad_alloc when memory runs out, like std::vector.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes);
  AlignedBuffer(AlignedBuffer&& o) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  ~AlignedBuffer();
  uint8_t* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  uint8_t* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace mt
