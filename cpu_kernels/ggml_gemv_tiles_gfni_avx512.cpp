// Tile GEMV kernels for AVX-512 CPUs with GFNI (vgf2p8affineqb: a shift and a mask of each byte
// in one instruction). Built with -mgfni and entered only where the CPU has it
// (ggml_gemv_tiles.cpp); CPUs without use ggml_gemv_tiles_avx512.cpp's forms of the same kernels.
#include "cpu_kernels/ggml_gemv_tiles_avx512.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu::ggml_gemv_detail {

TileDot avx512_gfni_tile_dot(uint32_t type, int nt) {
  if (GgmlType(type) != GgmlType::Q2_K) return nullptr;
  switch (nt) {
    case 1: return tile_q2k<1, true>;
    case 2: return tile_q2k<2, true>;
    case 3: return tile_q2k<3, true>;
    case 4: return tile_q2k<4, true>;
    default: return nullptr;
  }
}

}  // namespace mt::cpu::ggml_gemv_detail
