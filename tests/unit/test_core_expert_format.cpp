// The packed expert blob format: sizes and offsets worked out by hand from the format's
// description (runtime/core/expert_format.h), and the geometry checks.
#include <catch2/catch.hpp>

#include "runtime/core/expert_format.h"

using namespace mt;

TEST_CASE("expert blob layout at DeepSeek V3's real shape, by hand", "[core]") {
  // q4, hidden 7168, width 2048, group 32. gate/up [2048, 7168]: 2048*7168/2 code bytes and
  // 2048*(7168/32) fp16 scales; down [7168, 2048]: 7168*2048/2 and 7168*(2048/32)*2.
  const ExpertBlobLayout q4 = expert_blob_layout({ExpertQuant::Q4, 7168, 2048, 32});
  CHECK(q4.gate_bytes == 7340032u + 917504u);
  CHECK(q4.up_offset == q4.gate_bytes);
  CHECK(q4.down_offset == 2 * q4.gate_bytes);
  CHECK(q4.down_bytes == 7340032u + 917504u);
  CHECK(q4.total_bytes == 24772608u);  // already a multiple of 4096
  // q8: one byte per code, fp32 scales.
  const ExpertBlobLayout q8 = expert_blob_layout({ExpertQuant::Q8, 7168, 2048, 32});
  CHECK(q8.gate_bytes == 14680064u + 1835008u);
  CHECK(q8.total_bytes == 3u * (14680064u + 1835008u));
  const ExpertBlobLayout bf = expert_blob_layout({ExpertQuant::BF16, 7168, 2048, 32});
  CHECK(bf.total_bytes == 3u * 2048u * 7168u * 2u);
}

TEST_CASE("expert blob layout pads rows to the tile and parts to 64 and 4096 bytes", "[core]") {
  // hidden 64, width 40 (not a multiple of 16 rows), q4 group 8.
  // gate [40 -> 48 rows, 64]: codes 48*64/2 = 1536, scales 48*8*2 = 768 -> 2304.
  // down [64 rows, 40]: codes 64*40/2 = 1280, scales 64*5*2 = 640 -> 1920.
  const ExpertBlobLayout L = expert_blob_layout({ExpertQuant::Q4, 64, 40, 8});
  CHECK(L.gate_bytes == 2304u);
  CHECK(L.down_bytes == 1920u);
  CHECK(L.down_offset == 4608u);
  CHECK(L.total_bytes == 8192u);
  // A part that is not a multiple of 64 bytes is rounded up: q8 [48 rows, 8]: 384 codes,
  // 48 * 1 * 4 = 192 scales.
  CHECK(packed_matrix_bytes(ExpertQuant::Q8, 40, 8, 8) == 384u + 192u);
  CHECK(packed_matrix_bytes(ExpertQuant::BF16, 1, 8, 8) == 256u);  // 16 rows * 8 * 2
}

TEST_CASE("expert geometry checks name what is wrong", "[core]") {
  std::string why;
  CHECK(expert_geometry_valid({ExpertQuant::Q4, 7168, 2048, 32}, &why));
  CHECK_FALSE(expert_geometry_valid({ExpertQuant::Q4, 7168, 2040, 32}, &why));
  CHECK(why.find("must divide") != std::string::npos);
  CHECK_FALSE(expert_geometry_valid({ExpertQuant::Q8, 64, 64, 12}, &why));
  CHECK(why.find("multiple of 8") != std::string::npos);
  CHECK_FALSE(expert_geometry_valid({ExpertQuant::BF16, 60, 64, 32}, &why));
  CHECK_FALSE(expert_geometry_valid({ExpertQuant::Q4, 0, 64, 32}, &why));
  CHECK_FALSE(expert_geometry_valid({static_cast<ExpertQuant>(9), 64, 64, 32}, &why));
  CHECK_THROWS_AS(expert_blob_layout({ExpertQuant::Q4, 7168, 2040, 32}), std::invalid_argument);
  ExpertQuant q;
  CHECK(expert_quant_from_name("q8", q));
  CHECK(q == ExpertQuant::Q8);
  CHECK(expert_quant_name(ExpertQuant::BF16) == "bf16");
  CHECK_FALSE(expert_quant_from_name("q5", q));
}
