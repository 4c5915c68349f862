// An owned, 4096-aligned byte buffer: expert blobs read with O_DIRECT, a GGUF's row tiles, a
// store's dense weights.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mt {

// RAII 4096-aligned buffer (the allocation is rounded up to a multiple of 4096; zero-size
// buffers hold nullptr). Throws std::bad_alloc when memory runs out, like std::vector.
// huge_pages: from 2 MiB up, 2 MiB-aligned with transparent huge pages requested (best effort),
// for a store's dense weights (runtime/engine/store_dense.cpp). A GGUF's row tiles do without:
// faulting huge pages in cost ~0.55 s per GB at load here, for an lm_head 9-26% faster but
// routed experts no faster, or slower with only the dense tiles on them (docs/benchmarks.md,
// seventh session).
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes, bool huge_pages = false);
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
