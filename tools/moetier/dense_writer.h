// One non-expert tensor into a packed store (format 2), in the form the store's dense
// quantisation asks for: matrices packed Q8/Q4 (the routed-expert kernels' layout) or, for
// "bf16", unquantised (BF16, F16 and FP8 as stored, F32 rounded to BF16);
// kv_b (MLA reads it per head, as W_UK^T and as W_UV, which the row-streaming packed kernels do
// not serve), routers, norms and biases with the bytes as stored. Shared by `convert` and
// `make-model --packed`, so both write byte-identical stores.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "offload/expert_store.h"
#include "runtime/core/status.h"
#include "runtime/model/deepseek_weights.h"
#include "runtime/weights/safetensors.h"

namespace mt {

// A tensor as the checkpoint stores it; FP8 matrices come with their scale tensor.
struct StoredTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  const TensorInfo* scale = nullptr;  // "<name>_scale_inv" (F32) for F8_E4M3
};

// dense: "q8" | "q4" | "bf16"; group: the packed quantisation group; fp8_block: the scale tile.
Status write_dense_tensor(offload::ExpertStoreWriter& writer, const TensorSpec& spec, const StoredTensor& t,
                          const std::string& dense, int64_t group, int64_t fp8_block);

}  // namespace mt
