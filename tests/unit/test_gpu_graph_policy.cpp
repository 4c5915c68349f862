// When the CUDA backend captures a region as a CUDA graph (gpu_kernels/graph_policy.h), driven
// as the backend drives it: begin, then the eager run's or the capture's outcome.
#include <catch2/catch.hpp>

#include "gpu_kernels/graph_policy.h"

using namespace mt::gpu;

namespace {
// One region: begin, then report `needed_host` (eager) or `outcome` (capture).
RegionAction step(GraphPolicy& p, RegionKey k, bool decode, bool needed_host = false,
                  CaptureOutcome outcome = CaptureOutcome::Updated) {
  const RegionAction a = p.begin(k, decode);
  if (a == RegionAction::Eager) p.end_eager(needed_host);
  else p.end_capture(outcome);
  return a;
}
}  // namespace

TEST_CASE("graph policy: decode regions are captured after one clean eager run", "[gpu][graphs]") {
  GraphPolicy p(true);
  const RegionKey k{3, 1, 1};
  CHECK(step(p, k, true) == RegionAction::Eager);  // first sighting: learn, grow scratch
  CHECK(step(p, k, true, false, CaptureOutcome::Instantiated) == RegionAction::Capture);
  for (int i = 0; i < 20; ++i) CHECK(step(p, k, true) == RegionAction::Capture);
  CHECK(p.stats().captured == 21);
  CHECK(p.stats().instantiated == 1);
  CHECK(p.stats().updated == 20);
  // Keys are separate: another layer, or a batch of two, starts eager.
  CHECK(step(p, RegionKey{4, 1, 1}, true) == RegionAction::Eager);
  CHECK(step(p, RegionKey{3, 2, 2}, true) == RegionAction::Eager);
}

TEST_CASE("graph policy: prefill and disabled graphs are always eager", "[gpu][graphs]") {
  GraphPolicy p(true);
  for (int i = 0; i < 5; ++i) CHECK(step(p, RegionKey{0, 17, 1}, false) == RegionAction::Eager);
  GraphPolicy off(false);
  for (int i = 0; i < 5; ++i) CHECK(step(off, RegionKey{0, 1, 1}, true) == RegionAction::Eager);
  CHECK(off.stats().captured == 0);
  CHECK_FALSE(off.enabled());
}

TEST_CASE("graph policy: a region that needs the host is not captured until it stops needing it", "[gpu][graphs]") {
  GraphPolicy p(true);
  const RegionKey k{1, 1, 1};
  for (int i = 0; i < 10; ++i) CHECK(step(p, k, true, /*needed_host=*/true) == RegionAction::Eager);
  CHECK(p.stats().captured == 0);
  CHECK(step(p, k, true, false) == RegionAction::Eager);  // clean at last
  CHECK(step(p, k, true) == RegionAction::Capture);
}

TEST_CASE("graph policy: a failed capture leaves its key eager for good", "[gpu][graphs]") {
  GraphPolicy p(true);
  const RegionKey k{2, 1, 1};
  step(p, k, true);
  CHECK(step(p, k, true, false, CaptureOutcome::Failed) == RegionAction::Capture);
  for (int i = 0; i < 100; ++i) CHECK(step(p, k, true) == RegionAction::Eager);
  CHECK(p.stats().failed == 1);
  CHECK(step(p, RegionKey{5, 1, 1}, true) == RegionAction::Eager);  // other keys unaffected
  CHECK(step(p, RegionKey{5, 1, 1}, true) == RegionAction::Capture);
}

TEST_CASE("graph policy: graphs that keep re-instantiating back off, doubling", "[gpu][graphs]") {
  GraphPolicy p(true);
  const RegionKey k{0, 1, 1};
  step(p, k, true);
  auto window_of_reinstantiation = [&] {
    for (int64_t i = 0; i < GraphPolicy::kWindow; ++i)
      REQUIRE(step(p, k, true, false, CaptureOutcome::Instantiated) == RegionAction::Capture);
  };
  // The first window: its first instantiation is free, the other 7 of 8 count: back off.
  window_of_reinstantiation();
  CHECK(p.stats().backoffs == 1);
  int64_t eager = 0;
  while (step(p, k, true) == RegionAction::Eager) ++eager;
  CHECK(eager == GraphPolicy::kBackoff0);
  // That step was a capture (counted as an update); 7 more re-instantiations: back off twice as long.
  for (int64_t i = 1; i < GraphPolicy::kWindow; ++i) step(p, k, true, false, CaptureOutcome::Instantiated);
  CHECK(p.stats().backoffs == 2);
  eager = 0;
  while (step(p, k, true) == RegionAction::Eager) ++eager;
  CHECK(eager == 2 * GraphPolicy::kBackoff0);
  // A window of updates resets the back-off.
  for (int64_t i = 1; i < GraphPolicy::kWindow; ++i) step(p, k, true);
  for (int64_t i = 0; i < GraphPolicy::kWindow; ++i) step(p, k, true, false, CaptureOutcome::Instantiated);
  eager = 0;
  while (step(p, k, true) == RegionAction::Eager) ++eager;
  CHECK(eager == GraphPolicy::kBackoff0);
}

TEST_CASE("graph policy: a window with half re-instantiated does not back off", "[gpu][graphs]") {
  GraphPolicy p(true);
  const RegionKey k{0, 1, 1};
  step(p, k, true);
  step(p, k, true, false, CaptureOutcome::Instantiated);  // the first graph
  for (int round = 0; round < 10; ++round)
    for (int64_t i = 0; i < GraphPolicy::kWindow; ++i)
      REQUIRE(step(p, k, true, false, i % 2 ? CaptureOutcome::Instantiated : CaptureOutcome::Updated) ==
              RegionAction::Capture);
  CHECK(p.stats().backoffs == 0);
}

TEST_CASE("graph policy: an abandoned region teaches nothing", "[gpu][graphs]") {
  GraphPolicy p(true);
  const RegionKey k{7, 1, 1};
  // Unwinding before the op that needs the host: the key must not be taken as clean.
  CHECK(p.begin(k, true) == RegionAction::Eager);
  p.abandon();
  p.end_eager(false);  // a stray report after abandon is ignored
  CHECK(step(p, k, true, /*needed_host=*/true) == RegionAction::Eager);
  CHECK(step(p, k, true, /*needed_host=*/true) == RegionAction::Eager);
  // A recording dropped by an exception does not break the key either.
  CHECK(step(p, k, true, false) == RegionAction::Eager);
  CHECK(p.begin(k, true) == RegionAction::Capture);
  p.abandon();
  CHECK(step(p, k, true) == RegionAction::Capture);
  CHECK(p.stats().failed == 0);
}
