#include "runtime/backend/backend.h"

namespace mt::backend {

const char* op_name(Op op) {
  switch (op) {
    case Op::Embed: return "embed";
    case Op::Matmul: return "matmul";
    case Op::RmsNorm: return "rmsnorm";
    case Op::LayerNorm: return "layernorm";
    case Op::Rope: return "rope";
    case Op::SiluMul: return "silu_mul";
    case Op::Add: return "add";
    case Op::Route: return "route";
    case Op::CacheStore: return "cache_store";
    case Op::MlaAttention: return "mla_attention";
    case Op::IndexerTopk: return "indexer_topk";
    case Op::ExpertFfn: return "expert_ffn";
  }
  return "?";
}

}  // namespace mt::backend
