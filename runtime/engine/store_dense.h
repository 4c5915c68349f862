// The dense (non-expert) tensors of a packed store: reads its dense file into memory, checks every tensor's
// crc32c (this is their first load: a flipped byte is one error naming the file and tensor, not
// a run with wrong weights), and hands them over as a TensorStore for ModelWeights::bind.
#pragma once

#include "offload/expert_store.h"
#include "runtime/core/status.h"
#include "runtime/weights/safetensors.h"

namespace mt {

Result<TensorStore> open_store_dense(const offload::ExpertStore& store);

}  // namespace mt
