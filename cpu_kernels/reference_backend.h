// The reference backend: the exact fp32 path (the operators of cpu_kernels/ops.h and
// attention.h), the numerical oracle every other backend is tested against
// (tests/unit/test_backend_ops.cpp). Absorbed attention uses kv_b dequantised to fp32 once per
// layer (counted in weight_bytes()); caches are fp32.
#pragma once

#include <memory>

#include "runtime/backend/backend.h"

namespace mt::cpu {

std::unique_ptr<backend::Backend> make_reference_backend();

}  // namespace mt::cpu
