#include "gpu_kernels/cuda_experts.cuh"

#include <algorithm>
#include <cstring>

#include "gpu_kernels/cuda_ops.cuh"

namespace mt::gpu {

namespace {
size_t align16(size_t b) { return (b + 15) / 16 * 16; }
constexpr int64_t kGemmRows = 16;  // from here a task's weights are decoded once, not once per row
}  // namespace

CudaExperts::CudaExperts(std::shared_ptr<DeviceContext> ctx, bool resident)
    : ctx_(std::move(ctx)), what_(resident ? "routed experts of the VRAM tier" : "expert_ffn copies (one call)") {}

CudaExperts::~CudaExperts() {
  if (pending_y_) cudaEventSynchronize(stop_.get());  // never free buffers under a running batch
  forget_all();
}

Status CudaExperts::make_resident(const ExpertGeometry& g, int64_t key, const uint8_t* host_blob) {
  if (key < 0) key = static_cast<int64_t>(reinterpret_cast<intptr_t>(host_blob));
  if (blobs_.count(key)) return ok_status();
  std::string why;
  if (!gpu_expert_geometry_ok(g, &why)) return make_error("experts cannot run on the GPU: " + why);
  const GpuExpertLayout L = gpu_expert_layout(g);
  MT_TRY(ctx_->charge(what_, L.total_bytes));
  DeviceBuffer d;
  const Status a = d.try_ensure(L.total_bytes);
  if (!a.ok()) {
    ctx_->vram.release(what_, L.total_bytes);
    return make_error("VRAM for an expert: " + a.error());
  }
  packed_.resize(L.total_bytes);
  pack_expert_for_gpu(g, host_blob, packed_.data());
  // On the runner's stream and waited for: launches on it (a non-blocking stream) would not
  // wait for a copy on the legacy default stream.
  cudaError_t e = cudaMemcpyAsync(d.as(), packed_.data(), L.total_bytes, cudaMemcpyHostToDevice, stream_.get());
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream_.get());
  if (e != cudaSuccess) {
    ctx_->vram.release(what_, L.total_bytes);
    return status_of(e, "copying an expert to VRAM");
  }
  blobs_.emplace(key, std::move(d));
  return ok_status();
}

void CudaExperts::forget_all() {
  for (const auto& [host, d] : blobs_) ctx_->vram.release(what_, d.bytes());
  blobs_.clear();
}

Status CudaExperts::launch(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y) {
  try {
    return launch_batch(g, tasks, n_tasks, x, y);
  } catch (const std::exception& e) {  // a failed allocation or call: the Status, not a throw
    return make_error(std::string("expert runner: ") + e.what());
  }
}

Status CudaExperts::launch_batch(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x,
                                 float* y) {
  if (pending_y_) return make_error("expert runner: a batch is still in flight (launch without wait)");
  const GpuExpertLayout L = gpu_expert_layout(g);
  int64_t T = 0, rows = 0;
  for (int64_t i = 0; i < n_tasks; ++i)
    for (int64_t r = 0; r < tasks[i].n; ++r) T = std::max<int64_t>(T, tasks[i].tokens[r] + 1), ++rows;
  busy_s_ = 0.0;
  if (rows == 0) return ok_status();

  // One staging area, copied in one transfer: x rows, tokens, weights, task descriptors.
  const size_t x_bytes = align16(size_t(T * g.hidden) * 4), tok_bytes = align16(size_t(rows) * 4);
  const size_t desc_bytes = align16(size_t(n_tasks) * sizeof(DeviceExpertTask));
  const size_t total = x_bytes + 2 * tok_bytes + desc_bytes;
  in_.ensure(total);
  in_dev_.ensure(total);
  uint8_t* p = in_.as<uint8_t>();
  std::memcpy(p, x, size_t(T * g.hidden) * 4);
  auto* tok = reinterpret_cast<int32_t*>(p + x_bytes);
  auto* wt = reinterpret_cast<float*>(p + x_bytes + tok_bytes);
  auto* desc = reinterpret_cast<DeviceExpertTask*>(p + x_bytes + 2 * tok_bytes);
  // GEMV tasks first (the kernels take the first n_gemv descriptors), then the GEMM ones.
  std::vector<int64_t> order;
  for (int pass = 0; pass < 2; ++pass)
    for (int64_t i = 0; i < n_tasks; ++i)
      if ((tasks[i].n >= kGemmRows) == (pass == 1)) order.push_back(i);
  int64_t n_gemv = 0, widest = 0;
  int32_t off = 0;
  for (size_t j = 0; j < order.size(); ++j) {
    const ExpertTask& task = tasks[order[j]];
    auto it = blobs_.find(task.key >= 0 ? task.key : static_cast<int64_t>(reinterpret_cast<intptr_t>(task.blob)));
    if (it == blobs_.end()) return make_error("expert runner: an expert was launched that is not resident in VRAM");
    desc[j] = DeviceExpertTask{it->second.as<uint8_t>(), off, static_cast<int32_t>(task.n)};
    if (task.n < kGemmRows) ++n_gemv;
    else widest = std::max<int64_t>(widest, task.n);
    for (int64_t r = 0; r < task.n; ++r, ++off) {
      tok[off] = task.tokens[r];
      wt[off] = task.weight ? task.weight[r] : 1.0f;
    }
  }
  h_dev_.ensure(size_t(rows * g.inter) * 4);
  y_dev_.ensure(size_t(T * g.hidden) * 4);
  out_.ensure(size_t(T * g.hidden) * 4);
  cudaStream_t s = stream_.get();
  const uint8_t* d = in_dev_.as<uint8_t>();
  {
    check(cudaEventRecord(start_.get(), s), "expert runner: event");
    check(cudaMemcpyAsync(in_dev_.as(), p, total, cudaMemcpyHostToDevice, s), "expert runner: upload");
    check(cudaMemsetAsync(y_dev_.as(), 0, size_t(T * g.hidden) * 4, s), "expert runner: clear y");
    const auto* dev_tok = reinterpret_cast<const int32_t*>(d + x_bytes);
    const auto* dev_wt = reinterpret_cast<const float*>(d + x_bytes + tok_bytes);
    const auto* dev_x = reinterpret_cast<const float*>(d);
    expert_ffn(g, L, reinterpret_cast<const DeviceExpertTask*>(d + x_bytes + 2 * tok_bytes), n_gemv, dev_tok, dev_wt,
               dev_x, h_dev_.as<float>(), y_dev_.as<float>(), s);
    if (widest > 0) {  // the GEMM tasks, one after another on the stream
      const int64_t H = g.hidden, I = g.inter;
      w_bf16_.ensure(size_t(3 * H * I) * 2);
      x_bf16_.ensure(size_t(widest * H) * 2);
      gu_.ensure(size_t(2 * widest * I) * 4);
      h_bf16_.ensure(size_t(widest * I) * 2);
      yt_.ensure(size_t(widest * H) * 4);
      auto* wq = w_bf16_.as<uint8_t>();
      for (size_t j = size_t(n_gemv); j < order.size(); ++j) {
        const int64_t n = desc[j].n, o = desc[j].off;
        for (int which = 0; which < 3; ++which)
          dequantize_expert_matrix(g.quant, desc[j].blob, L.mat[which], wq + size_t(which * H * I) * 2, s);
        gather_rows_bf16(dev_x, H, dev_tok + o, n, x_bf16_.as(), s);
        float* gate = gu_.as<float>();
        float* up = gate + n * I;
        gemm_rm(blas_.get(), n, I, H, Mat{x_bf16_.as(), CUDA_R_16BF, H}, Mat{wq, CUDA_R_16BF, H}, true, gate, CUDA_R_32F, I);
        gemm_rm(blas_.get(), n, I, H, Mat{x_bf16_.as(), CUDA_R_16BF, H}, Mat{wq + size_t(H * I) * 2, CUDA_R_16BF, H}, true,
                up, CUDA_R_32F, I);
        silu_mul_bf16(gate, up, n * I, h_bf16_.as(), s);
        gemm_rm(blas_.get(), n, H, I, Mat{h_bf16_.as(), CUDA_R_16BF, I}, Mat{wq + size_t(2 * H * I) * 2, CUDA_R_16BF, I},
                true, yt_.as(), CUDA_R_32F, H);
        scatter_add_rows(yt_.as<float>(), H, dev_tok + o, dev_wt + o, n, y_dev_.as<float>(), s);
      }
    }
    check(cudaMemcpyAsync(out_.as(), y_dev_.as(), size_t(T * g.hidden) * 4, cudaMemcpyDeviceToHost, s),
          "expert runner: download");
    check(cudaEventRecord(stop_.get(), s), "expert runner: event");
  }
  pending_y_ = y;
  pending_elems_ = T * g.hidden;
  return ok_status();
}

Status CudaExperts::wait() {
  if (!pending_y_) return ok_status();
  float* y = pending_y_;
  pending_y_ = nullptr;
  MT_TRY(status_of(cudaEventSynchronize(stop_.get()), "expert runner: waiting for the GPU"));
  float ms = 0.0f;
  MT_TRY(status_of(cudaEventElapsedTime(&ms, start_.get(), stop_.get()), "expert runner: timing"));
  busy_s_ = double(ms) / 1e3;
  const float* o = out_.as<float>();
  for (int64_t i = 0; i < pending_elems_; ++i) y[i] += o[i];
  return ok_status();
}

namespace {

class CudaExpertRunner final : public ExpertRunner {
 public:
  explicit CudaExpertRunner(std::shared_ptr<DeviceContext> ctx) : experts_(std::move(ctx), true) {}
  const char* name() const override { return "cuda"; }
  Status make_resident(const ExpertGeometry& g, int64_t layer, int64_t expert, const uint8_t* blob) override {
    const Status s = experts_.make_resident(g, expert_key(layer, expert), blob);
    if (!s.ok())
      return make_error("layer " + std::to_string(layer) + " expert " + std::to_string(expert) + ": " + s.error() +
                        "");
    return s;
  }
  Status launch(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n, const float* x, float* y) override {
    return experts_.launch(g, tasks, n, x, y);
  }
  Status wait() override { return experts_.wait(); }
  double last_busy_seconds() const override { return experts_.last_busy_seconds(); }

 private:
  CudaExperts experts_;
};

}  // namespace

std::unique_ptr<ExpertRunner> make_expert_runner(std::shared_ptr<DeviceContext> ctx) {
  return std::make_unique<CudaExpertRunner>(std::move(ctx));
}

}  // namespace mt::gpu
