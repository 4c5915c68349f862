// TierBudget: items add up, the limit refuses the item that would pass it (charging nothing)
// with a message naming it and the tier, and the report lists items largest first.
#include <catch2/catch.hpp>

#include "runtime/core/memory_budget.h"

using namespace mt;

TEST_CASE("a tier budget accounts items and refuses the one past its limit", "[core]") {
  TierBudget ram("RAM", 1000);
  REQUIRE(ram.charge("kv cache", 300).ok());
  REQUIRE(ram.charge("experts", 600).ok());
  CHECK(ram.used() == 900);
  auto st = ram.charge("workspace", 101);
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(st.error(), Catch::Contains("workspace") && Catch::Contains("RAM"));
  CHECK(ram.used() == 900);
  CHECK(ram.items().size() == 2);
  REQUIRE(ram.charge("workspace", 100).ok());
  CHECK(ram.used() == 1000);
  CHECK_FALSE(ram.charge("one byte more", 1).ok());
  const std::string r = ram.report();
  CHECK(r.find("experts") < r.find("kv cache"));
  CHECK(r.find("total RAM") != std::string::npos);
  // Huge values do not wrap around the limit check.
  CHECK_FALSE(ram.charge("huge", UINT64_MAX).ok());
}

TEST_CASE("a tier budget without a limit only accounts", "[core]") {
  TierBudget vram("VRAM");
  REQUIRE(vram.charge("a", uint64_t(1) << 40).ok());
  REQUIRE(vram.charge("b", uint64_t(1) << 40).ok());
  CHECK(vram.used() == uint64_t(2) << 40);
  CHECK(vram.limit() == 0);
}
