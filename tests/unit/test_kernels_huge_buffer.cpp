// cpu::HugeBuffer: 2 MiB-aligned, zero-filled, owned by exactly one object.
#include <catch2/catch.hpp>

#include <cstdint>
#include <utility>

#include "cpu_kernels/huge_buffer.h"

using mt::cpu::HugeBuffer;

TEST_CASE("HugeBuffer is 2 MiB-aligned and zero-filled past an odd size", "[kernels][huge_buffer]") {
  const size_t bytes = (size_t{3} << 20) + 12345;  // rounds up to 4 MiB
  HugeBuffer b(bytes);
  REQUIRE(b.data() != nullptr);
  CHECK(b.size() == bytes);
  CHECK(reinterpret_cast<uintptr_t>(b.data()) % (size_t{2} << 20) == 0);
  size_t nonzero = 0;
  for (size_t i = 0; i < (size_t{4} << 20); ++i) nonzero += b.data()[i] != 0;
  CHECK(nonzero == 0);
}

TEST_CASE("HugeBuffer hands its memory on when moved", "[kernels][huge_buffer]") {
  HugeBuffer a(100);
  a.data()[99] = 7;
  uint8_t* p = a.data();
  HugeBuffer b(std::move(a));
  CHECK(a.data() == nullptr);
  CHECK(a.size() == 0);
  CHECK(b.data() == p);
  CHECK(b.data()[99] == 7);
  HugeBuffer c(200);
  c = std::move(b);  // c's own memory is freed (ASan would report a leak otherwise)
  CHECK(c.data() == p);
  CHECK(c.size() == 100);
  CHECK(b.data() == nullptr);
  HugeBuffer empty;
  CHECK(empty.data() == nullptr);
  CHECK(empty.size() == 0);
}
