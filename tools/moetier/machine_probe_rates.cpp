#include "tools/moetier/machine_probe_rates.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "cpu_kernels/cpu_backend.h"
#include "cpu_kernels/ops.h"
#include "cpu_kernels/packed_matmul.h"
#include "cpu_kernels/huge_buffer.h"
#include "cpu_kernels/read_bandwidth.h"
#include "offload/disk_bandwidth.h"
#include "runtime/core/dtype.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"
#include "runtime/core/weight_view.h"
#include "tools/moetier/median.h"
#include "tools/moetier/other_cpu_use.h"
#include "tools/moetier/progress.h"

namespace mt::cli::probe {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kHidden = 7168;  // DeepSeek V3 hidden size
constexpr int64_t kInter = 2048;   // routed expert width
constexpr int64_t kGroup = 32;
constexpr uint64_t kMinModelFile = uint64_t{64} << 20;


std::string num(double v, int decimals = 1) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// (max - min) / median of repeated measurements of one figure.
double spread(const std::vector<double>& v) {
  const double m = median(v);
  if (v.size() < 2 || m <= 0) return 0;
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return (*hi - *lo) / m;
}

// Repeats `once` (one timed measurement, returning the figure) `runs` times; keeps the median
// and records the spread under `name`.
template <class Once>
double repeated(planner::MachineProfile& p, const std::string& name, int runs, Once once) {
  std::vector<double> v;
  for (int i = 0; i < runs; ++i) v.push_back(once());
  p.spread[name] = spread(v);
  return median(v);
}

// Calls `call` (one warm-up call first) for `seconds` in `runs` slices (default: the settings'
// repeats); the figure is `work` units per second, the median kept and the spread recorded under
// `name`.
template <class Call>
double timed_rate(planner::MachineProfile& p, const std::string& name, const ProbeSettings& d, double seconds, double work,
                  Call call, int runs = 0) {
  if (runs <= 0) runs = d.repeats();
  call();  // warm-up
  return repeated(p, name, runs, [&] {
    int64_t calls = 0;
    const auto t0 = Clock::now();
    do {
      call();
      ++calls;
    } while (seconds_since(t0) < seconds / runs);
    return double(calls) * work / seconds_since(t0);
  });
}

// A prefill figure: `call` (`gflop` of work) after one warm-up call, the best call's GFLOP/s
// over `seconds`.
template <class Call>
double best_gflops(double seconds, double gflop, Call call) {
  call();  // warm-up (oneDNN primitive creation)
  double best = 0;
  const auto r0 = Clock::now();
  do {
    const auto c0 = Clock::now();
    call();
    best = std::max(best, gflop / seconds_since(c0));
  } while (seconds_since(r0) < seconds);
  return best;
}

// Deterministic fast pseudo-random bits (xorshift64*): weights and file contents only need to
// be non-trivial (no zero pages, nothing a compressing disk could shrink).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  float uniform(float scale) { return scale * (static_cast<float>(next() >> 40) / 8388608.0f - 1.0f); }
};

void fill_floats(std::vector<float>& v, uint64_t seed, float scale) {
  Rng r(seed);
  for (auto& x : v) x = r.uniform(scale);
}


// Fills `bytes` with copies of one 1 MiB random block passed through `make` (a byte pattern).
template <class Make>
void fill_tiled(uint8_t* dst, size_t bytes, Make make) {
  std::vector<uint8_t> tile(size_t{1} << 20);
  Rng r(7);
  for (auto& b : tile) b = make(static_cast<uint8_t>(r.next() >> 56));
  for (size_t off = 0; off < bytes; off += tile.size())
    std::memcpy(dst + off, tile.data(), std::min(tile.size(), bytes - off));
}

// A scratch file for the disk measurement, removed when this goes out of scope.
class TempFile {
 public:
  TempFile() = default;
  ~TempFile() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  // Random bytes, fsynced (so the reads come from the disk, not from writes still in flight),
  // then dropped from the page cache.
  Status create(const std::filesystem::path& dir, uint64_t bytes) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return make_error(dir.string() + ": cannot create directory for the disk measurement: " + ec.message());
    path_ = dir / (".moetier-disk-probe-" + std::to_string(::getpid()) + ".tmp");
    std::filesystem::remove(path_, ec);
    const std::string name = path_.string();
    const int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      path_.clear();
      return make_error(name + ": cannot create a file for the disk measurement (" + std::strerror(errno) +
                        "); choose another place with --disk-dir");
    }
    std::vector<uint64_t> chunk((size_t{4} << 20) / sizeof(uint64_t));
    Rng r(11);
    std::string failure;
    for (uint64_t done = 0; done < bytes && failure.empty();) {
      for (auto& w : chunk) w = r.next();
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size() * sizeof(uint64_t), bytes - done));
      size_t put = 0;
      while (put < n) {
        const ssize_t w = ::write(fd, reinterpret_cast<const uint8_t*>(chunk.data()) + put, n - put);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          failure = std::string("write: ") + std::strerror(errno);
          break;
        }
        put += static_cast<size_t>(w);
      }
      done += put;
    }
    if (failure.empty() && ::fsync(fd) != 0) failure = std::string("fsync: ") + std::strerror(errno);
    if (failure.empty()) (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    if (!failure.empty())
      return make_error(name + ": cannot write the disk measurement file (" + failure + "); choose another place with --disk-dir");
    return ok_status();
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The largest regular file directly in `dir` (a packed store's experts-*.bin or a safetensors shard).
std::filesystem::path largest_file(const std::filesystem::path& dir, uint64_t* size) {
  std::filesystem::path best;
  *size = 0;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (!it->is_regular_file(e2)) continue;
    const uint64_t s = it->file_size(e2);
    if (!e2 && s > *size) {
      *size = s;
      best = it->path();
    }
  }
  return best;
}

}  // namespace

std::string device_of(const std::filesystem::path& dir) {
  // A directory not made yet (a --disk-dir) will live on its nearest existing ancestor's device.
  std::error_code ec;
  std::filesystem::path at = std::filesystem::absolute(dir, ec);
  if (ec) at = dir;
  struct stat st{};
  while (::stat(at.c_str(), &st) != 0) {
    if (!at.has_parent_path() || at.parent_path() == at) return "";
    at = at.parent_path();
  }
  return std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
}

std::string spread_text(const planner::MachineProfile& p, const std::string& name) {
  auto it = p.spread.find(name);
  return it == p.spread.end() ? "" : " +-" + num(50.0 * it->second, 0) + "%";
}

uint64_t expert_blob_bytes() {
  return expert_blob_layout({ExpertQuant::Q4, kHidden, kInter, kGroup}).total_bytes;
}

void measure_ram(const ProbeSettings& d, planner::MachineProfile& p, const Say& say) {
  size_t buffer = d.ram_buffer_bytes();
  // Leave most of a small machine's free memory alone.
  while (p.ram_available_bytes > 0 && buffer > (size_t{128} << 20) && buffer > p.ram_available_bytes / 4) buffer /= 2;
  const auto t0 = Clock::now();
  p.ram_read_gbs = repeated(p, "ram.read_gbs", d.repeats(), [&] {
    return cpu::measure_read_bandwidth_gbs(buffer, 0, d.ram_seconds() / d.repeats());
  });
  if (p.numa_nodes.size() == 1) p.numa_nodes[0].read_gbs = p.ram_read_gbs;
  say("  " + num(p.ram_read_gbs) + spread_text(p, "ram.read_gbs") + " GB/s over " + format_bytes(double(buffer)) +
      ", median of " + std::to_string(d.repeats()) + " (" + num(seconds_since(t0)) + " s)" +
      (p.numa_nodes.size() > 1 ? "; per NUMA node: not measured" : ""));
}

std::filesystem::path disk_target_dir(const std::filesystem::path& model_dir, const std::filesystem::path& disk_dir) {
  if (!model_dir.empty()) {
    uint64_t size = 0;
    if (!largest_file(model_dir, &size).empty() && size >= kMinModelFile) return model_dir;
  }
  return disk_dir;
}

Status measure_disk(const ProbeSettings& d, const std::filesystem::path& model_dir, const std::filesystem::path& disk_dir,
                    planner::MachineProfile& p, const Say& say) {
  std::filesystem::path file;
  TempFile temp;
  uint64_t size = 0;
  if (!model_dir.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(model_dir, ec))
      return make_error("--model " + model_dir.string() + ": not a directory");
    file = largest_file(model_dir, &size);
    if (size < kMinModelFile) {
      say("  the files in " + model_dir.string() + " are under 64 MiB; measuring a temporary file in " +
          disk_dir.string() + " instead");
      file.clear();
    }
  }
  if (file.empty()) {
    const auto t0 = Clock::now();
    MT_TRY(temp.create(disk_dir, d.temp_file_bytes()));
    file = temp.path();
    size = d.temp_file_bytes();
    say("  wrote a " + format_bytes(double(size)) + " scratch file in " + disk_dir.string() + " (" +
        num(seconds_since(t0)) + " s)");
  }
  const std::filesystem::path dir = temp.path().empty() ? model_dir : disk_dir;
  std::error_code ec;
  const auto canonical = std::filesystem::weakly_canonical(dir, ec);
  p.disk_path = (ec ? dir : canonical).string();
  p.disk_rates.clear();
  p.disk_device = device_of(dir);
  p.disk_read_gbs = 0;
  p.disk_cpu_s_per_gb = 0;
  // The loader reads each blob in 1 MiB chunks, many in flight (offload/blob_loader.h). The
  // table covers queue depths and whole-blob reads; the planner's figure is the best depth at
  // 1 MiB, measured again until it has `repeats` samples (median kept, spread recorded).
  const uint64_t loader_block = uint64_t{1} << 20;
  std::string failure;
  auto read_rate = [&](uint64_t block, int qd) {
    auto r = offload::measure_sequential_read_gbs(file, block, qd, d.disk_seconds());
    if (!r) failure = r.error();
    return r ? *r : 0.0;
  };
  int best_qd = 1;
  double best = -1;
  for (const uint64_t block : {loader_block, expert_blob_bytes()}) {
    std::string line = "  " + format_bytes(double(block)) + " reads of " + file.filename().string() + ":";
    for (const int qd : {1, 4, 16, 32}) {
      const double gbs = read_rate(block, qd);
      if (!failure.empty()) return make_error(failure + " (choose another place with --disk-dir)");
      p.disk_rates.push_back({block, qd, gbs});
      if (block == loader_block && gbs > best) best = gbs, best_qd = qd;
      line += " QD" + std::to_string(qd) + " " + num(gbs, 2);
    }
    say(line + " GB/s");
  }
  std::vector<double> samples = {best};
  double gb_read = 0;
  const OtherCpuUse cpu;
  for (int i = 1; i < d.repeats(); ++i) {
    const auto r0 = Clock::now();
    samples.push_back(read_rate(loader_block, best_qd));
    gb_read += samples.back() * seconds_since(r0);
    if (!failure.empty()) return make_error(failure + " (choose another place with --disk-dir)");
  }
  p.disk_read_gbs = median(samples);
  p.spread["disk.read_gbs"] = spread(samples);
  // What reading costs the CPUs (the kernel's and the hypervisor's I/O work): time the compute
  // threads lose while experts stream in.
  const double busy = cpu.busy_seconds();
  if (busy >= 0 && gb_read > 0) p.disk_cpu_s_per_gb = busy / gb_read;
  say("  the planner uses " + num(p.disk_read_gbs, 2) + spread_text(p, "disk.read_gbs") + " GB/s (1 MiB reads at QD" +
      std::to_string(best_qd) + ", median of " + std::to_string(samples.size()) + "), costing " +
      num(p.disk_cpu_s_per_gb, 2) + " CPU-seconds per GB; device " +
      (p.disk_device.empty() ? std::string("unknown") : p.disk_device));
  return ok_status();
}

void measure_expert_kernels(const ProbeSettings& d, planner::MachineProfile& p, const Say& say) {
  const size_t n_weights = static_cast<size_t>(kHidden * kInter);
  std::vector<float> gate(n_weights), up(n_weights), down(n_weights);
  fill_floats(gate, 1, 0.04f);
  fill_floats(up, 2, 0.04f);
  fill_floats(down, 3, 0.04f);
  std::vector<float> x(static_cast<size_t>(kHidden)), y(x.size());
  fill_floats(x, 4, 2.0f);
  const int T = d.prefill_tokens();
  std::vector<float> xp(static_cast<size_t>(T * kHidden)), yp(xp.size());
  fill_floats(xp, 5, 2.0f);
  std::vector<int32_t> tokens(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) tokens[static_cast<size_t>(t)] = t;
  const std::vector<float> weights(static_cast<size_t>(T), 0.125f);

  p.kernels.clear();
  for (const auto q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16}) {
    const auto t0 = Clock::now();
    const ExpertGeometry g{q, kHidden, kInter, kGroup};
    cpu::ExpertWorkspace ws;  // reused across calls, as the runtime does
    const size_t blob = expert_blob_layout(g).total_bytes;
    // Enough distinct experts that the working set is far beyond the caches (8 at least: a
    // decode step reads 8 distinct ones).
    const size_t n = std::clamp<size_t>((d.expert_working_set() + blob - 1) / blob, 8, 32);
    cpu::HugeBuffer blobs(n * blob);
    cpu::pack_expert(g, gate.data(), up.data(), down.data(), blobs.data());
    for (size_t e = 1; e < n; ++e) std::memcpy(blobs.data() + e * blob, blobs.data(), blob);

    // Decode: 8 experts x 1 token per step, cycling through the working set.
    const int32_t tok0 = 0;
    const float w = 0.125f;
    size_t next = 0;
    auto step = [&] {
      cpu::ExpertTask tasks[8];
      for (size_t k = 0; k < 8; ++k) tasks[k] = {blobs.data() + ((next + k) % n) * blob, &tok0, &w, 1};
      next = (next + 8) % n;
      cpu::experts_ffn(g, tasks, 8, x.data(), y.data(), d.kernels, &ws);
    };
    step();  // and timed_rate's warm-up: two steps before the timing
    const std::string name(expert_quant_name(q));
    const double decode = timed_rate(p, "kernels." + name + ".decode_gbs", d, d.decode_seconds(), 8.0 * double(blob) / 1e9,
                                     step, 5);

    // Prefill: the same T tokens through 8 experts (the grouped, oneDNN path), best call.
    cpu::ExpertTask ptasks[8];
    for (size_t k = 0; k < 8; ++k) ptasks[k] = {blobs.data() + k * blob, tokens.data(), weights.data(), T};
    const double gflop = 8.0 * T * 6.0 * double(kHidden) * double(kInter) / 1e9;
    const double best = best_gflops(d.prefill_seconds(), gflop, [&] {
      cpu::experts_ffn(g, ptasks, 8, xp.data(), yp.data(), d.kernels, &ws);
    });

    p.kernels.push_back({name, decode, best});
    say("  " + name + ": decode " + num(decode) + spread_text(p, "kernels." + name + ".decode_gbs") + " GB/s, prefill " + num(best) + " GFLOP/s (" +
        std::to_string(n) + " experts of " + format_bytes(double(blob)) + ", " + num(seconds_since(t0)) + " s)");
  }
}

void measure_gguf_kernels(const ProbeSettings& d, planner::MachineProfile& p, const Say& say) {
  // A GGUF's matrices as `generate` runs them: row tiles through the cpu backend's matmul, one
  // matrix at a time (gate, up, down of each expert). Rates count the GGUF blocks' bytes (what
  // the planner's sizes are), not the tiles' few percent more.
  const auto be = cpu::make_cpu_backend(d.kernels);
  int isa = 0;
  cpu::isa_level_from_name(cpu::expert_kernel_isa(d.kernels), isa);
  std::vector<float> x(static_cast<size_t>(kHidden)), h(static_cast<size_t>(kHidden)), y(static_cast<size_t>(kHidden));
  fill_floats(x, 8, 2.0f);
  fill_floats(h, 9, 2.0f);
  const int64_t T = d.prefill_tokens();
  std::vector<float> xp(static_cast<size_t>(T * kHidden)), yp(xp.size());
  fill_floats(xp, 10, 2.0f);
  for (const GgmlType type : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                              GgmlType::Q8_0}) {
    const uint32_t id = uint32_t(type);
    const std::string name = ggml_type_name(id);
    if (isa < 1 || !cpu::ggml_gemv_tiles_native(id, isa)) {
      say("  " + name + ": no tile kernel at this ISA; GGUF files of it are planned at moetier's q4/q8 rates");
      continue;
    }
    const auto t0 = Clock::now();
    const int64_t block = ggml_type_info(id)->block;
    // One expert: gate and up [width x hidden], down [hidden x width], as tiles back to back.
    const size_t in_tiles = size_t(ggml_tiled_bytes(id, kInter, kHidden, block));
    const size_t out_tiles = size_t(ggml_tiled_bytes(id, kHidden, kInter, block));
    const size_t expert = 2 * in_tiles + out_tiles;
    const double expert_blocks = 3.0 * double(kInter) * double(ggml_row_bytes(id, kHidden));
    const size_t n = std::clamp<size_t>((d.expert_working_set() + expert - 1) / expert, 8, 32);
    cpu::HugeBuffer tiles(n * expert);
    {
      std::vector<uint8_t> blocks(size_t(kInter) * ggml_row_bytes(id, kHidden));
      for (int m = 0; m < 3; ++m) {
        const int64_t rows = m < 2 ? kInter : kHidden, cols = m < 2 ? kHidden : kInter;
        ggml_fill_random_blocks(id, blocks.data(), rows * (cols / block), uint32_t(11 + m));
        ggml_tile_pack_matrix(id, blocks.data(), rows, cols, tiles.data() + size_t(m) * in_tiles);
      }
      for (size_t e = 1; e < n; ++e) std::memcpy(tiles.data() + e * expert, tiles.data(), expert);
    }
    auto view = [&](size_t e, int m) {
      const int64_t rows = m < 2 ? kInter : kHidden, cols = m < 2 ? kHidden : kInter;
      return WeightView{DType::GGUF, tiles.data() + e * expert + size_t(m) * in_tiles, rows, cols, nullptr, 128, id, true};
    };
    // Decode: 8 experts x 1 token per step, cycling through the working set.
    size_t next = 0;
    auto step = [&] {
      for (size_t k = 0; k < 8; ++k) {
        const size_t e = (next + k) % n;
        be->matmul(view(e, 0), x.data(), 1, y.data());
        be->matmul(view(e, 1), x.data(), 1, y.data());
        be->matmul(view(e, 2), h.data(), 1, y.data());
      }
      next = (next + 8) % n;
    };
    const std::string key = "kernels." + name + ".decode_gbs";
    const double decode = timed_rate(p, key, d, d.decode_seconds(), 8.0 * expert_blocks / 1e9, step, 5);
    // Prefill: T tokens through one expert's three matrices (the backend's many-token path), best call.
    const double gflop = double(T) * 6.0 * double(kHidden) * double(kInter) / 1e9;
    const double best = best_gflops(d.prefill_seconds() / 4, gflop, [&] {
      be->matmul(view(0, 0), xp.data(), T, yp.data());
      be->matmul(view(0, 1), xp.data(), T, yp.data());
      be->matmul(view(0, 2), xp.data(), T, yp.data());
    });
    p.kernels.push_back({name, decode, best});
    say("  " + name + ": decode " + num(decode) + spread_text(p, key) + " GB/s, prefill " + num(best) + " GFLOP/s (" +
        std::to_string(n) + " experts of " + format_bytes(expert_blocks) + ", " + num(seconds_since(t0)) + " s)");
  }
}

namespace {

// The non-expert matrices of one DeepSeek V3 MoE layer, as [rows, cols]: q_a, q_b, kv_a, o and
// the shared expert's gate, up and down. Their short rows (1536 for q_b) are part of what the
// rate measures.
constexpr int64_t kLayerShapes[][2] = {{1536, kHidden}, {24576, 1536}, {576, kHidden}, {kHidden, 16384},
                                       {kInter, kHidden}, {kInter, kHidden}, {kHidden, kInter}};

}  // namespace

void measure_dense(const ProbeSettings& d, planner::MachineProfile& p, const Say& say) {
  // The matmul the runtime's default backend runs at one token (its decode GEMV).
  const auto be = cpu::make_cpu_backend(d.kernels);
  const auto t0 = Clock::now();
  {
    // [18432 x 7168]: the width of V3's dense FFN; 264 MB in bf16, far beyond the caches.
    const int64_t rows = 18432, cols = kHidden;
    std::vector<float> x(static_cast<size_t>(cols)), y(static_cast<size_t>(rows));
    fill_floats(x, 6, 1.0f);
    {
      const size_t bytes = static_cast<size_t>(rows * cols) * 2;
      cpu::HugeBuffer buf(bytes);
      // bf16 with a small exponent: finite, non-zero values (|v| < 2^-3).
      fill_tiled(buf.data(), bytes, [](uint8_t b) { return static_cast<uint8_t>((b & 0x81) | 0x3c); });
      const WeightView w{DType::BF16, buf.data(), rows, cols, nullptr, 128};
      p.dense_bf16_gbs = timed_rate(p, "dense.bf16_gbs", d, d.dense_seconds(), double(bytes) / 1e9,
                                    [&] { be->matmul(w, x.data(), 1, y.data()); });
    }
    {
      const size_t bytes = static_cast<size_t>(rows * cols);
      cpu::HugeBuffer buf(bytes);
      // e4m3 codes with the top exponent bit clear: never NaN.
      fill_tiled(buf.data(), bytes, [](uint8_t b) { return static_cast<uint8_t>(b & 0xb7); });
      WeightView w{DType::F8_E4M3, buf.data(), rows, cols, nullptr, 128};
      std::vector<float> scale(static_cast<size_t>(((rows + 127) / 128) * w.scale_cols()), 0.01f);
      w.scale = scale.data();
      p.dense_fp8_gbs = timed_rate(p, "dense.fp8_gbs", d, d.dense_seconds(),
                                   double(bytes + scale.size() * sizeof(float)) / 1e9,
                                   [&] { be->matmul(w, x.data(), 1, y.data()); });
    }
  }
  // Packed dense (store format 2): one layer's attention and shared-expert matrices in turn,
  // each from its own memory, as a decode step streams them; as many layers as make the
  // working set far larger than any cache (a server L3 holds one q4 layer). One random fp32
  // tile, packed per matrix; the values do not change the kernels' speed.
  for (const DType dt : {DType::Q8_PACKED, DType::Q4_PACKED}) {
    // One layer packed, then copied until the working set is large enough.
    std::vector<std::vector<uint8_t>> layer;
    for (const auto& sh : kLayerShapes) {
      const int64_t rows = sh[0], cols = sh[1];
      layer.emplace_back(cpu::packed_weight_bytes(dt, rows, cols, kGroup), uint8_t{0});
      std::vector<float> w(static_cast<size_t>(16 * cols));
      fill_floats(w, 12, 0.05f);
      for (int64_t r0 = 0; r0 < rows; r0 += 16)
        cpu::pack_weight_rows(dt, w.data(), r0, std::min<int64_t>(16, rows - r0), rows, cols, kGroup, layer.back().data());
    }
    std::vector<cpu::HugeBuffer> bufs;  // moving one keeps its memory where the views point
    std::vector<WeightView> views;
    size_t bytes = 0, max_rows = 0;
    for (size_t i = 0; bytes < d.expert_working_set(); i = (i + 1) % std::size(kLayerShapes)) {
      const auto& sh = kLayerShapes[i];
      const std::vector<uint8_t>& src = layer[i];
      bufs.emplace_back(src.size());
      std::memcpy(bufs.back().data(), src.data(), src.size());
      views.push_back(WeightView{dt, bufs.back().data(), sh[0], sh[1], nullptr, kGroup});
      bytes += src.size();
      max_rows = std::max(max_rows, static_cast<size_t>(sh[0]));
    }
    std::vector<float> x(static_cast<size_t>(16384)), y(max_rows);
    fill_floats(x, 13, 1.0f);
    const bool q8 = dt == DType::Q8_PACKED;
    (q8 ? p.dense_q8_gbs : p.dense_q4_gbs) =
        timed_rate(p, q8 ? "dense.q8_gbs" : "dense.q4_gbs", d, d.dense_seconds(), double(bytes) / 1e9, [&] {
          for (const WeightView& w : views) be->matmul(w, x.data(), 1, y.data());
        });
  }
  say("  bf16 " + num(p.dense_bf16_gbs) + spread_text(p, "dense.bf16_gbs") + ", fp8 " + num(p.dense_fp8_gbs) +
      spread_text(p, "dense.fp8_gbs") + " GB/s; packed q8 " + num(p.dense_q8_gbs) + spread_text(p, "dense.q8_gbs") +
      ", q4 " + num(p.dense_q4_gbs) + spread_text(p, "dense.q4_gbs") + " GB/s over layers of attention and shared "
      "expert; weights at 1 token (" + num(seconds_since(t0)) + " s)");
}

void measure_attention(const ProbeSettings& d, planner::MachineProfile& p, const Say& say) {
  // DeepSeek V3 MLA through the cpu backend's own operator (the seam the model calls): 128
  // heads, nope 128, rope 64, v 128, latent 512, kv_b in bf16 as a store keeps it; one decode
  // query over `ctx` cached positions.
  const int64_t H = 128, ctx = d.attention_context();
  const MlaHeadDims dims{128, 64, 128, 512};
  const int64_t R = dims.latent;
  const auto be = cpu::make_cpu_backend(d.kernels);
  const int64_t kvb_rows = H * (dims.nope + dims.v);
  std::vector<uint16_t> kvb(static_cast<size_t>(kvb_rows * R));
  {
    std::vector<float> row(static_cast<size_t>(R));
    for (int64_t r = 0; r < kvb_rows; ++r) {
      fill_floats(row, 9 + static_cast<uint64_t>(r), 0.05f);
      for (int64_t c = 0; c < R; ++c) kvb[static_cast<size_t>(r * R + c)] = f32_to_bf16(row[static_cast<size_t>(c)]);
    }
  }
  be->load_attention_weights(0, WeightView{DType::BF16, reinterpret_cast<const uint8_t*>(kvb.data()), kvb_rows, R, nullptr, 128}, dims);
  auto cache = be->make_cache(backend::CacheShape{1, R, dims.rope, 0}, ctx);
  {
    std::vector<float> latent(static_cast<size_t>(ctx * R)), rope(static_cast<size_t>(ctx * dims.rope));
    fill_floats(latent, 10, 1.0f);
    fill_floats(rope, 11, 1.0f);
    be->cache_store(*cache, 0, 0, ctx, latent.data(), rope.data());
  }
  std::vector<float> q(static_cast<size_t>(H * (dims.nope + dims.rope))), out(static_cast<size_t>(H * dims.v));
  fill_floats(q, 8, 1.0f);
  backend::MlaArgs a;
  a.layer = 0;
  a.n = 1;
  a.pos0 = ctx - 1;  // the query sees every cached position
  a.heads = H;
  a.dims = dims;
  a.scale = 0.07f;
  a.q = q.data();
  a.out = out.data();
  // The planner's count (cost_model.cpp attention_flops): absorb q and expand v, then per key
  // a score over latent + rope and a weighted sum over latent.
  const double flops = double(H) * (2.0 * double(dims.nope * R + R * dims.v) +
                                    double(ctx) * (2.0 * double(R + dims.rope) + 2.0 * double(R)));
  const auto t0 = Clock::now();
  p.attention_gflops = timed_rate(p, "dense.attention_gflops", d, d.attention_seconds(), flops / 1e9,
                                  [&] { be->mla_attention(*cache, a); });
  say("  MLA attention " + num(p.attention_gflops) + spread_text(p, "dense.attention_gflops") +
      " GFLOP/s (cpu backend, 128 heads, kv_b bf16, 1 token over " + std::to_string(ctx) + " cached positions, " +
      num(seconds_since(t0)) + " s)");
}

}  // namespace mt::cli::probe
