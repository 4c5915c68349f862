#include "gpu_kernels/gpu_layout.h"

#include <algorithm>
#include <stdexcept>

#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/ops.h"

namespace mt::gpu {

namespace {
uint64_t align256(uint64_t b) { return (b + 255) / 256 * 256; }
}  // namespace

bool gpu_expert_geometry_ok(const ExpertGeometry& g, std::string* why) {
  if (!expert_geometry_valid(g, why)) return false;
  if (g.hidden % 8 || g.inter % 8 || (g.quant != ExpertQuant::BF16 && g.group % 8)) {
    if (why) *why = "the GPU expert kernels need hidden, inter and the group to be multiples of 8";
    return false;
  }
  return true;
}

GpuExpertLayout gpu_expert_layout(const ExpertGeometry& g) {
  std::string why;
  if (!gpu_expert_geometry_ok(g, &why)) throw std::invalid_argument("gpu_expert_layout: " + why);
  GpuExpertLayout L;
  uint64_t at = 0;
  for (int which = 0; which < 3; ++which) {
    GpuMatrix& m = L.mat[which];
    m.rows = expert_matrix_shape(g, which).rows;
    m.cols = expert_matrix_shape(g, which).cols;
    m.group = g.quant == ExpertQuant::BF16 ? m.cols : g.group;
    const auto n = static_cast<uint64_t>(m.rows * m.cols);
    const uint64_t code_bytes = g.quant == ExpertQuant::Q4 ? n / 2 : g.quant == ExpertQuant::Q8 ? n : 2 * n;
    const uint64_t scale_bytes =
        g.quant == ExpertQuant::BF16 ? 0 : uint64_t(m.rows * (m.cols / m.group)) * (g.quant == ExpertQuant::Q4 ? 2 : 4);
    m.codes = at;
    at = align256(at + code_bytes);
    m.scales = at;
    at = align256(at + scale_bytes);
  }
  L.total_bytes = at;
  return L;
}

void pack_expert_for_gpu(const ExpertGeometry& g, const uint8_t* cpu_blob, uint8_t* out) {
  const GpuExpertLayout L = gpu_expert_layout(g);
  std::memset(out, 0, L.total_bytes);
  for (int which = 0; which < 3; ++which) {
    const GpuMatrix& m = L.mat[which];
    const cpu::RawExpertMatrix raw = cpu::raw_expert_matrix(g, cpu_blob, which);
    uint8_t* codes = out + m.codes;
    switch (g.quant) {
      case ExpertQuant::BF16:
        std::memcpy(codes, raw.bits.data(), raw.bits.size() * 2);
        break;
      case ExpertQuant::Q8:
        std::memcpy(codes, raw.codes.data(), raw.codes.size());
        std::memcpy(out + m.scales, raw.scales.data(), raw.scales.size() * 4);
        break;
      case ExpertQuant::Q4:
        for (size_t i = 0; i < raw.codes.size(); i += 2)
          codes[i / 2] = static_cast<uint8_t>((raw.codes[i] & 15) | ((raw.codes[i + 1] & 15) << 4));
        std::memcpy(out + m.scales, raw.scale_bits.data(), raw.scale_bits.size() * 2);
        break;
      case ExpertQuant::GGUF:  // no GPU kernels for ggml blocks: the CUDA backend refuses them first
        break;
    }
  }
}

DType gpu_dense_dtype(DType stored) {
  return stored == DType::F32 || stored == DType::F16 ? DType::F32 : DType::BF16;
}

void pack_dense_for_gpu(const WeightView& w, std::vector<uint8_t>& out) {
  const DType to = gpu_dense_dtype(w.dtype);
  const auto n = static_cast<size_t>(w.rows * w.cols);
  out.resize(n * dtype_size(to));
  if (w.dtype == to) {  // F32 or BF16: the stored bytes
    std::memcpy(out.data(), w.data, out.size());
    return;
  }
  // Row slabs, so a 7168 x 18432 weight never needs a whole fp32 copy.
  const int64_t slab = std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, w.cols));
  std::vector<float> rows(static_cast<size_t>(slab * w.cols));
  for (int64_t r0 = 0; r0 < w.rows; r0 += slab) {
    const int64_t nr = std::min(slab, w.rows - r0);
    cpu::dequantize_rows(w, r0, nr, rows.data());
    const auto base = static_cast<size_t>(r0 * w.cols);
    for (size_t i = 0; i < static_cast<size_t>(nr * w.cols); ++i) {
      if (to == DType::F32) {
        std::memcpy(&out[(base + i) * 4], &rows[i], 4);
      } else {
        const uint16_t b = f32_to_bf16(rows[i]);
        std::memcpy(&out[(base + i) * 2], &b, 2);
      }
    }
  }
}

}  // namespace mt::gpu
