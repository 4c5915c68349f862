// The fast CPU backend: the reference backend's operators, except where a faster kernel exists:
// decode-sized matmuls over every dense weight format (cpu_kernels/dense_gemv.h, AVX-512/AVX2 by
// dispatch), prefill-sized ones through oneDNN (cpu_kernels/dense_gemm.h) and routed experts through the packed-expert kernels (cpu_kernels/expert_ffn.h).
// Results equal the reference within fp32 rounding (tests/unit/test_backend_ops.cpp). Grows op
// by op (docs/kernels.md says which ops are fast).
#pragma once

#include <memory>

#include "cpu_kernels/expert_ffn.h"
#include "runtime/backend/backend.h"

namespace mt::cpu {

// `kernels.isa_level` caps the instruction set (the CLI's --isa); at level 0 this backend is
// the reference with the scalar expert kernels.
std::unique_ptr<backend::Backend> make_cpu_backend(ExpertKernelConfig kernels = {});

}  // namespace mt::cpu
