#include "tools/moetier/dense_writer.h"

#include <algorithm>
#include <cstring>

#include "cpu_kernels/ops.h"
#include "cpu_kernels/packed_matmul.h"

namespace mt {

namespace {

enum class DenseClass { Raw, Bf16, Packed };

DenseClass dense_class(const TensorSpec& spec, const std::string& dense, int64_t group) {
  const bool matrix = spec.role == TensorRole::Linear || spec.role == TensorRole::LmHead ||
                      spec.role == TensorRole::Embedding;
  if (!matrix || spec.name.find("kv_b_proj") != std::string::npos) return DenseClass::Raw;
  if (dense == "bf16") return DenseClass::Bf16;
  if (spec.shape.size() == 2 && spec.shape[1] % group == 0 && group % 8 == 0) return DenseClass::Packed;
  return DenseClass::Bf16;
}

// A stored matrix as a WeightView (FP8: its block scales copied out, aligned, into `scale`).
WeightView view_of(const StoredTensor& t, int64_t block, std::vector<float>& scale) {
  WeightView v{t.dtype, t.data, t.shape[0], t.shape.size() > 1 ? t.shape[1] : 1, nullptr, block};
  if (t.dtype == DType::F8_E4M3 && t.scale) {
    scale.resize(static_cast<size_t>(t.scale->numel()));
    std::memcpy(scale.data(), t.scale->data, t.scale->nbytes);
    v.scale = scale.data();
  }
  return v;
}

// Writes one matrix packed or as BF16, slab by slab (bounded memory for the 2 GB lm_head).
Status write_converted(offload::ExpertStoreWriter& writer, const StoredTensor& t, DenseClass cls, DType packed,
                       int64_t group, int64_t block) {
  std::vector<float> scale;
  const WeightView v = view_of(t, block, scale);
  const int64_t rows = v.rows, cols = v.cols;
  constexpr int64_t kSlab = 1024;  // rows, a multiple of the packed row tile
  std::vector<float> f(static_cast<size_t>(std::min(rows, kSlab) * cols));
  if (cls == DenseClass::Bf16) {
    std::vector<uint8_t> out(static_cast<size_t>(rows * cols) * 2);
    for (int64_t r0 = 0; r0 < rows; r0 += kSlab) {
      const int64_t n = std::min(kSlab, rows - r0);
      cpu::dequantize_rows(v, r0, n, f.data());
      for (int64_t i = 0; i < n * cols; ++i) {
        const uint16_t b = f32_to_bf16(f[static_cast<size_t>(i)]);
        std::memcpy(out.data() + (r0 * cols + i) * 2, &b, 2);
      }
    }
    return writer.add_dense(t.name, DType::BF16, t.shape, out.data(), out.size());
  }
  // Packed, a slab at a time into its place in the whole.
  std::vector<uint8_t> out(cpu::packed_weight_bytes(packed, rows, cols, group), 0);
  for (int64_t r0 = 0; r0 < rows; r0 += kSlab) {
    const int64_t n = std::min(kSlab, rows - r0);
    cpu::dequantize_rows(v, r0, n, f.data());
    cpu::pack_weight_rows(packed, f.data(), r0, n, rows, cols, group, out.data());
  }
  return writer.add_dense(t.name, packed, t.shape, out.data(), out.size());
}

}  // namespace

Status write_dense_tensor(offload::ExpertStoreWriter& writer, const TensorSpec& spec, const StoredTensor& t,
                          const std::string& dense, int64_t group, int64_t fp8_block) {
  if (t.dtype == DType::F8_E4M3 && !t.scale)
    return make_error("convert: FP8 tensor '" + t.name + "' has no '" + t.name + "_scale_inv'");
  DenseClass cls = dense_class(spec, dense, group);
  // bf16 means "not quantised": BF16, F16 and the checkpoint's FP8 (fewer bits, its own block
  // scales, a kernel of its own) stay as they are; only F32 is rounded to BF16.
  if (cls == DenseClass::Bf16 && t.dtype != DType::F32) cls = DenseClass::Raw;
  if (cls == DenseClass::Raw) {
    MT_TRY(writer.add_dense(t.name, t.dtype, t.shape, t.data, t.nbytes));
    if (t.scale) MT_TRY(writer.add_dense(t.scale->name, t.scale->dtype, t.scale->shape, t.scale->data, t.scale->nbytes));
    return ok_status();
  }
  const DType packed = dense == "q4" ? DType::Q4_PACKED : DType::Q8_PACKED;
  return write_converted(writer, t, cls, packed, group, fp8_block);
}

}  // namespace mt
