// The placement solver: reserves what must live on the GPU (and in RAM), then places routed
// experts into VRAM, RAM and NVMe (behind a RAM cache) to minimise the predicted decode time.
//
// VRAM: greedy by exact marginal gain per layer (layers run one after another and a layer's
// GPU and CPU experts overlap, so a layer whose CPU side is already short gains nothing from
// more VRAM experts; a heap over layers picks the best next move). RAM: the most frequently
// chosen of the rest. NVMe: what remains, behind a RAM cache whose size is chosen among a few
// candidates by predicted decode speed. Pins are placed first and never moved.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/cost_model.h"
#include "planner/placement.h"

namespace mt::planner {

struct Pin {
  int64_t layer = 0;
  int64_t expert = 0;
  Tier tier = Tier::Ram;
};
// "LAYER:EXPERT=TIER" (TIER: vram|gpu, ram, nvme|disk); EXPERT may be '*' for the whole layer.
Result<std::vector<Pin>> parse_pin(const std::string& text, const ModelConfig& c);

struct PlanRequest {
  CostInputs cost;
  uint64_t vram_budget = 0;       // 0: the GPU's free memory minus vram_headroom
  uint64_t ram_budget = 0;        // 0: available RAM minus ram_headroom
  uint64_t vram_headroom = uint64_t(3) << 29;   // 1.5 GiB: CUDA context, fragmentation
  uint64_t ram_headroom = uint64_t(4) << 30;    // OS, page cache for the dense weights' reads
  // RAM for routed experts (RAM tier plus the NVMe cache) after the reservations; when set it
  // replaces ram_budget (which then becomes reservations + this).
  uint64_t expert_ram_budget = 0;
  int64_t nvme_cache_bytes = -1;  // RAM for the NVMe experts' cache; -1: chosen by the solver
  std::vector<Pin> pins;
};

// One line of memory that must be reserved before experts are placed.
struct Reservation {
  std::string what;
  uint64_t bytes = 0;
};

struct Plan {
  Placement placement;
  Prediction prediction;
  uint64_t vram_budget = 0, ram_budget = 0;
  std::vector<Reservation> vram_reserved, ram_reserved;
  uint64_t vram_reserved_bytes = 0, ram_reserved_bytes = 0;
  bool gpu = false;                 // the plan uses a GPU
  std::vector<std::string> notes;   // what was assumed (uniform prior, described hardware, ...)
  std::vector<std::string> warnings;
};

// A model that cannot fit (GPU reservations over the VRAM budget, experts over RAM with no
// disk, pins over a tier's room) is an error that says what does not fit and by how much.
Result<Plan> make_plan(const PlanRequest& req);

}  // namespace mt::planner
