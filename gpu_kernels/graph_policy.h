// When the CUDA backend records a region of ops as a CUDA graph and replays it, and when it
// runs them one by one (eager). Host-only logic, built in every build and tested on the CPU
// (tests/unit/test_gpu_graph_policy.cpp); gpu_kernels/cuda_backend.cu acts on its answers.
//
// A region is one layer's attention block of one step (runtime/backend/backend.h,
// Backend::begin_region). Capture pays when a region is launched often with the same ops:
// decode steps. Each step is captured again (its positions differ) and the captured graph
// updates the layer's executable graph in place (cudaGraphExecUpdate), which is cheap while
// the ops keep their shape; when an update fails the graph is instantiated anew, which is not.
//
// The rules, per key (layer, rows, sequences):
//  - graphs off, or a prefill region (a sequence with more than one row): eager;
//  - until an eager run of the key needed no host: eager (a weight in RAM, an unprepared
//    vector, the indexer's selection cannot be captured); the first sighting also lets scratch
//    grow before any capture;
//  - a capture that failed: eager for good for that key;
//  - more than half of a window of kWindow captures re-instantiated (windows follow one
//    another, they do not slide): eager for a back-off that doubles each time (kBackoff0 ..
//    kBackoffMax steps), then captures again.
// Recording costs the host about what launching the ops one by one does; what a graph saves is
// the GPU's idle time between small kernels. scripts/gpu_check.sh measures both ways.
#pragma once

#include <cstdint>
#include <map>
#include <tuple>

namespace mt::gpu {

struct RegionKey {
  int64_t layer = 0, rows = 0, sequences = 0;
  bool operator<(const RegionKey& o) const {
    return std::tie(layer, rows, sequences) < std::tie(o.layer, o.rows, o.sequences);
  }
};

enum class RegionAction { Eager, Capture };
enum class CaptureOutcome { Updated, Instantiated, Failed };

struct GraphPolicyStats {
  int64_t eager = 0, captured = 0, updated = 0, instantiated = 0, failed = 0, backoffs = 0;
};

class GraphPolicy {
 public:
  static constexpr int64_t kWindow = 8, kBackoff0 = 32, kBackoffMax = 1024;

  explicit GraphPolicy(bool enabled) : enabled_(enabled) {}

  // The action for a region about to start; `decode`: every sequence has one row.
  RegionAction begin(const RegionKey& k, bool decode);
  // How the region that begin() answered went: an eager run (and whether it needed the host),
  // or a capture's outcome.
  void end_eager(bool needed_host);
  void end_capture(CaptureOutcome o);
  // The region begin() answered was abandoned (an exception): nothing is learnt from it.
  void abandon() { current_ = nullptr; }

  const GraphPolicyStats& stats() const { return stats_; }
  bool enabled() const { return enabled_; }

 private:
  struct KeyState {
    bool seen_clean = false;    // its last eager run needed no host
    bool broken = false;        // a capture failed
    bool has_exec = false;      // an executable graph exists for it
    int64_t window = 0, reinstantiated = 0;  // captures in the current window, of which re-instantiated
    int64_t backoff_left = 0, backoff = kBackoff0;
  };
  bool enabled_;
  std::map<RegionKey, KeyState> keys_;
  KeyState* current_ = nullptr;
  RegionAction current_action_ = RegionAction::Eager;
  GraphPolicyStats stats_;
};

}  // namespace mt::gpu
