// Routed-expert FFN on packed weights (the blob format: runtime/core/expert_format.h): packing
// from fp32, and the fused decode / prefill kernels. y += w * down(silu(gate x) * up x).
// The code order inside a row (interleaving for the SIMD kernels) is private to
// expert_ffn*.cpp; pack_expert and unpack_expert are its only writers/readers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/core/expert_format.h"

namespace mt::cpu {

// gate, up: [inter, hidden]; down: [hidden, inter]; fp32 row-major. blob: total_bytes.
void pack_expert(const ExpertGeometry& g, const float* gate, const float* up, const float* down, uint8_t* blob);
// Inverse of pack_expert up to quantisation (exact for BF16 inputs stored as BF16).
void unpack_expert(const ExpertGeometry& g, const uint8_t* blob, float* gate, float* up, float* down);

// One matrix of a blob (which: 0 gate, 1 up, 2 down) as its raw stored values, row-major,
// without dequantising: codes [rows, cols] (Q4: 0..15, value (code - 8) * scale; Q8: -127..127,
// value code * scale; BF16: the bf16 bits, in `bits`) and scales [rows, cols/group] (Q4: fp16
// bits in `scale_bits`; Q8: fp32 in `scales`). For other layouts (the GPU's) to copy exactly.
struct RawExpertMatrix {
  int64_t rows = 0, cols = 0, group = 0;
  std::vector<int8_t> codes;
  std::vector<uint16_t> bits, scale_bits;
  std::vector<float> scales;
};
RawExpertMatrix raw_expert_matrix(const ExpertGeometry& g, const uint8_t* blob, int which);

// How the expert kernels run: chosen by the caller (the CLI reads --isa and MOETIER_ISA,
// MOETIER_PREFILL_MIN into it), passed by value; no kernel reads the environment.
struct ExpertKernelConfig {
  int isa_level = -1;        // highest ISA to use: 0 scalar, 1 avx2, 2 avx512 (clamped to the CPU's); -1: the CPU's best
  int64_t prefill_min = -1;  // tokens from which a task takes the oneDNN prefill path; 0: never; -1: by ISA and quant
};

// Scratch of the decode kernels (quantised activations, intermediates, per-thread tiles), owned
// by the caller and reused from call to call, so that decode allocates nothing once warm.
// bytes(): what it holds, for the owner's memory accounting. One call at a time.
class ExpertWorkspace {
 public:
  ExpertWorkspace();
  ~ExpertWorkspace();
  ExpertWorkspace(ExpertWorkspace&&) noexcept;
  ExpertWorkspace& operator=(ExpertWorkspace&&) noexcept;
  size_t bytes() const;
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// One expert applied to n_tokens rows of x ([n_tokens, hidden]); y[t] += weight[t] * FFN(x[t]).
// Decode-sized batches (1..16) use the SIMD GEMV path; larger batches may use oneDNN.
void expert_ffn(const ExpertGeometry& g, const uint8_t* blob, const float* x, int64_t n_tokens,
                const float* weight, float* y, const ExpertKernelConfig& cfg = {}, ExpertWorkspace* ws = nullptr);

// Several experts in one call (threads spread over experts and rows): task i applies expert
// blob[i] to the tokens tokens[i][0..n[i]) of x with weights weight[i][...], accumulating into y
// rows of the same token index. x, y: [T, hidden].
using mt::ExpertTask;  // runtime/backend/backend.h
// ws: scratch to reuse (null: a temporary one for this call).
void experts_ffn(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y,
                 const ExpertKernelConfig& cfg = {}, ExpertWorkspace* ws = nullptr);

// The instruction set the kernels dispatch to with `cfg` on this CPU ("avx512-vnni", "avx2", "scalar").
std::string_view expert_kernel_isa(const ExpertKernelConfig& cfg = {});
// "scalar", "avx2", "avx512" (or "avx512-vnni") -> 0, 1, 2; false for anything else.
bool isa_level_from_name(std::string_view name, int& level);

}  // namespace mt::cpu
