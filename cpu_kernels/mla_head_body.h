// The body of cpu::mla_attend_head (cpu_kernels/attention.h), included once per instruction set
// by attention.cpp (baseline), attention_avx2.cpp and attention_avx512.cpp, each inside a
// namespace of its own and compiled with its own flags: one source, three builds, the CPU
// backend picks by the CPU. No include guard on purpose.
// uk_row(j) / uv_row(i): row j of W_UK / row i of W_UV as R fp32 values, valid until the next
// call (fp32 rows in place, or a stored row decoded into a small buffer).
template <class UkRow, class UvRow>
inline void mla_attend_head_rows(const float* q_nope, const float* q_rope, UkRow uk_row, UvRow uv_row,
                                 const float* latent_cache, const float* rope_cache, const int32_t* keys, int64_t n_keys,
                                 const MlaHeadDims& d, float scale, float* out, float* scratch) {
  const int64_t R = d.latent;
  float* qa = scratch;            // absorbed query, [R]
  float* olat = scratch + R;      // latent-space output, [R]
  float* scores = scratch + 2 * R;
  std::fill(qa, qa + R, 0.0f);
  for (int64_t j = 0; j < d.nope; ++j) {
    const float qj = q_nope[j];
    const float* row = uk_row(j);
#pragma omp simd
    for (int64_t r = 0; r < R; ++r) qa[r] += qj * row[r];
  }
  for (int64_t i = 0; i < n_keys; ++i) {
    const float* lat = latent_cache + static_cast<int64_t>(keys[i]) * R;
    const float* kr = rope_cache + static_cast<int64_t>(keys[i]) * d.rope;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t r = 0; r < R; ++r) s += qa[r] * lat[r];
    float sr = 0.0f;
#pragma omp simd reduction(+ : sr)
    for (int64_t r = 0; r < d.rope; ++r) sr += q_rope[r] * kr[r];
    scores[i] = (s + sr) * scale;
  }
  softmax(scores, n_keys);
  std::fill(olat, olat + R, 0.0f);
  for (int64_t i = 0; i < n_keys; ++i) {
    const float p = scores[i];
    const float* lat = latent_cache + static_cast<int64_t>(keys[i]) * R;
#pragma omp simd
    for (int64_t r = 0; r < R; ++r) olat[r] += p * lat[r];
  }
  for (int64_t i = 0; i < d.v; ++i) {
    const float* row = uv_row(i);
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t r = 0; r < R; ++r) s += row[r] * olat[r];
    out[i] = s;
  }
}


inline void mla_attend_head_body(const float* q_nope, const float* q_rope, const float* w_uk, const float* w_uv,
                                 const float* latent_cache, const float* rope_cache, const int32_t* keys, int64_t n_keys,
                                 const MlaHeadDims& d, float scale, float* out, float* scratch) {
  const int64_t R = d.latent;
  mla_attend_head_rows(
      q_nope, q_rope, [&](int64_t j) { return w_uk + j * R; }, [&](int64_t i) { return w_uv + i * R; }, latent_cache,
      rope_cache, keys, n_keys, d, scale, out, scratch);
}
