// A zero-filled buffer on 2 MiB-aligned memory with transparent huge pages requested, freed when
// it goes out of scope. The bandwidth yardstick (read_bandwidth.h) and the benchmarks' weights use
// it alike, so that both are read through the same page size.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mt::cpu {

class HugeBuffer {
 public:
  HugeBuffer() = default;
  // bytes rounded up to 2 MiB (at least 2 MiB); throws std::bad_alloc where the memory is not there.
  explicit HugeBuffer(size_t bytes);
  ~HugeBuffer();
  HugeBuffer(HugeBuffer&& o) noexcept;
  HugeBuffer& operator=(HugeBuffer&& o) noexcept;
  HugeBuffer(const HugeBuffer&) = delete;
  HugeBuffer& operator=(const HugeBuffer&) = delete;

  uint8_t* data() const { return p_; }
  size_t size() const { return bytes_; }  // as asked for, not as rounded

 private:
  uint8_t* p_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace mt::cpu
