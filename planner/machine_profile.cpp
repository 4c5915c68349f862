#include "planner/machine_profile.h"
#include "runtime/core/json_fields.h"
#include "runtime/core/text_file.h"


#include <algorithm>
#include <cmath>
#include <ctime>
#include <cstdio>
#include <limits>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

namespace mt::planner {

namespace {

using json = nlohmann::json;

constexpr int kProfileVersion = 2;  // 2: spreads, others' CPU share, disk devices, packed dense rates
const char* kRemeasure = "re-run `moetier profile` to measure this machine again";

// ---- JSON field readers: every field is required; errors name the field's path and `where` ----

class FieldReader {
 public:
  explicit FieldReader(const std::string& where) : where_(where) {}

  Result<const json*> member(const json& obj, const std::string& path, const char* key) const {
    const std::string name = join(path, key);
    if (!obj.is_object()) return make_error(where_ + ": '" + (path.empty() ? "profile" : path) + "' must be an object");
    auto it = obj.find(key);
    if (it == obj.end()) return make_error(where_ + ": missing field '" + name + "'");
    return &*it;
  }
  Status object(const json& obj, const std::string& path, const char* key, const json*& out) const {
    MT_ASSIGN(const json* v, member(obj, path, key));
    if (!v->is_object()) return type_error(path, key, "an object", *v);
    out = v;
    return ok_status();
  }
  Status array(const json& obj, const std::string& path, const char* key, const json*& out) const {
    MT_ASSIGN(const json* v, member(obj, path, key));
    if (!v->is_array()) return type_error(path, key, "an array", *v);
    out = v;
    return ok_status();
  }
  // The values themselves through JsonFields (runtime/core/json_fields.h): one range rule and
  // message format for every parser.
  Status string(const json& obj, const std::string& path, const char* key, std::string& out) const {
    MT_TRY(member(obj, path, key));
    MT_ASSIGN(out, fields(obj, path).string(key));
    return ok_status();
  }
  Status boolean(const json& obj, const std::string& path, const char* key, bool& out) const {
    MT_TRY(member(obj, path, key));
    MT_ASSIGN(out, fields(obj, path).boolean(key));
    return ok_status();
  }
  // A non-negative finite number.
  Status rate(const json& obj, const std::string& path, const char* key, double& out) const {
    MT_TRY(member(obj, path, key));
    MT_ASSIGN(out, fields(obj, path).number(key, 0.0, std::numeric_limits<double>::max()));
    return ok_status();
  }
  // A non-negative integer (an integral float is accepted: hand-edited files write 2.4e10).
  Status count(const json& obj, const std::string& path, const char* key, uint64_t& out) const {
    MT_TRY(member(obj, path, key));
    MT_ASSIGN(out, fields(obj, path).count(key, 0, std::numeric_limits<uint64_t>::max()));
    return ok_status();
  }
  Status integer(const json& obj, const std::string& path, const char* key, int& out, int lo, int hi) const {
    MT_TRY(member(obj, path, key));
    MT_ASSIGN(int64_t v, fields(obj, path).integer(key, lo, hi));
    out = static_cast<int>(v);
    return ok_status();
  }
  Error fail(const std::string& path, const std::string& what) const {
    return make_error(where_ + ": field '" + path + "' " + what);
  }

  static std::string join(const std::string& path, const char* key) { return path.empty() ? key : path + "." + key; }

 private:
  JsonFields<json> fields(const json& obj, const std::string& path) const { return JsonFields<json>(obj, where_, path); }
  Error type_error(const std::string& path, const char* key, const char* want, const json& got) const {
    std::string shown = got.dump(-1, ' ', false, json::error_handler_t::replace);
    if (shown.size() > 40) shown = shown.substr(0, 37) + "...";
    return make_error(where_ + ": field '" + join(path, key) + "' is " + shown + "; it must be " + want);
  }
  std::string where_;
};

Status read_cpu(const FieldReader& r, const json& root, MachineProfile& p) {
  const json* cpu = nullptr;
  const json* isa = nullptr;
  MT_TRY(r.object(root, "", "cpu", cpu));
  MT_TRY(r.string(*cpu, "cpu", "model", p.cpu_model));
  MT_TRY(r.integer(*cpu, "cpu", "physical_cores", p.physical_cores, 1, 1 << 20));
  MT_TRY(r.integer(*cpu, "cpu", "logical_cpus", p.logical_cpus, 1, 1 << 20));
  if (p.logical_cpus < p.physical_cores)
    return r.fail("cpu.logical_cpus", "(" + std::to_string(p.logical_cpus) + ") must be at least cpu.physical_cores (" +
                                          std::to_string(p.physical_cores) + ")");
  MT_TRY(r.object(*cpu, "cpu", "isa", isa));
  MT_TRY(r.boolean(*isa, "cpu.isa", "avx2", p.avx2));
  MT_TRY(r.boolean(*isa, "cpu.isa", "avx512", p.avx512));
  MT_TRY(r.boolean(*isa, "cpu.isa", "avx512_vnni", p.avx512_vnni));
  MT_TRY(r.boolean(*isa, "cpu.isa", "avx512_bf16", p.avx512_bf16));
  MT_TRY(r.boolean(*isa, "cpu.isa", "amx", p.amx));
  return ok_status();
}

Status read_ram(const FieldReader& r, const json& root, MachineProfile& p) {
  const json* ram = nullptr;
  const json* nodes = nullptr;
  MT_TRY(r.object(root, "", "ram", ram));
  MT_TRY(r.count(*ram, "ram", "total_bytes", p.ram_total_bytes));
  MT_TRY(r.count(*ram, "ram", "available_bytes", p.ram_available_bytes));
  MT_TRY(r.rate(*ram, "ram", "read_gbs", p.ram_read_gbs));
  if (p.ram_total_bytes == 0) return r.fail("ram.total_bytes", "must be positive");
  if (p.ram_available_bytes > p.ram_total_bytes)
    return r.fail("ram.available_bytes", "must not exceed ram.total_bytes");
  MT_TRY(r.array(*ram, "ram", "numa_nodes", nodes));
  std::set<int> seen;
  for (size_t i = 0; i < nodes->size(); ++i) {
    const std::string path = "ram.numa_nodes[" + std::to_string(i) + "]";
    const json& n = (*nodes)[i];
    if (!n.is_object()) return r.fail(path, "must be an object");
    NumaNodeInfo node;
    MT_TRY(r.integer(n, path, "os_index", node.os_index, 0, 1 << 20));
    MT_TRY(r.count(n, path, "memory_bytes", node.memory_bytes));
    MT_TRY(r.rate(n, path, "read_gbs", node.read_gbs));
    if (!seen.insert(node.os_index).second)
      return r.fail(path + ".os_index", "repeats node " + std::to_string(node.os_index));
    p.numa_nodes.push_back(node);
  }
  return ok_status();
}

Status read_disk_figures(const FieldReader& r, const json& obj, const std::string& path, DiskFigures& d) {
  const json* rates = nullptr;
  MT_TRY(r.string(obj, path, "path", d.path));
  MT_TRY(r.string(obj, path, "device", d.device));
  MT_TRY(r.rate(obj, path, "read_gbs", d.read_gbs));
  MT_TRY(r.rate(obj, path, "cpu_s_per_gb", d.cpu_s_per_gb));
  MT_TRY(r.array(obj, path, "rates", rates));
  for (size_t i = 0; i < rates->size(); ++i) {
    const std::string rp = path + ".rates[" + std::to_string(i) + "]";
    const json& x = (*rates)[i];
    if (!x.is_object()) return r.fail(rp, "must be an object");
    DiskRate rate;
    MT_TRY(r.count(x, rp, "block_bytes", rate.block_bytes));
    if (rate.block_bytes == 0) return r.fail(rp + ".block_bytes", "must be positive");
    MT_TRY(r.integer(x, rp, "queue_depth", rate.queue_depth, 1, 1 << 16));
    MT_TRY(r.rate(x, rp, "gbs", rate.gbs));
    d.rates.push_back(rate);
  }
  return ok_status();
}

Status read_disk(const FieldReader& r, const json& root, MachineProfile& p) {
  const json* disk = nullptr;
  const json* others = nullptr;
  MT_TRY(r.object(root, "", "disk", disk));
  DiskFigures current;
  MT_TRY(read_disk_figures(r, *disk, "disk", current));
  p.use_disk(current);
  MT_TRY(r.array(root, "", "other_disks", others));
  std::set<std::string> devices{current.device};
  for (size_t i = 0; i < others->size(); ++i) {
    const std::string path = "other_disks[" + std::to_string(i) + "]";
    const json& o = (*others)[i];
    if (!o.is_object()) return r.fail(path, "must be an object");
    DiskFigures d;
    MT_TRY(read_disk_figures(r, o, path, d));
    if (d.device.empty() || !devices.insert(d.device).second)
      return r.fail(path + ".device", "must name a device not listed before ('" + d.device + "')");
    p.other_disks.push_back(std::move(d));
  }
  return ok_status();
}

json disk_json(const DiskFigures& d) {
  json rates = json::array();
  for (const auto& x : d.rates) rates.push_back({{"block_bytes", x.block_bytes}, {"queue_depth", x.queue_depth}, {"gbs", x.gbs}});
  return {{"path", d.path}, {"device", d.device}, {"read_gbs", d.read_gbs}, {"cpu_s_per_gb", d.cpu_s_per_gb},
          {"rates", rates}};
}

Status read_spread(const FieldReader& r, const json& root, const std::string& where, MachineProfile& p) {
  const json* spread = nullptr;
  MT_TRY(r.object(root, "", "spread", spread));
  for (auto it = spread->begin(); it != spread->end(); ++it) {
    MT_ASSIGN(const double v, JsonFields<json>(*spread, where, "spread").number(it.key().c_str(), 0.0, 1e6));
    p.spread[it.key()] = v;
  }
  return ok_status();
}

Status read_kernels(const FieldReader& r, const json& root, MachineProfile& p) {
  const json* kernels = nullptr;
  const json* dense = nullptr;
  MT_TRY(r.array(root, "", "kernels", kernels));
  for (size_t i = 0; i < kernels->size(); ++i) {
    const std::string path = "kernels[" + std::to_string(i) + "]";
    const json& k = (*kernels)[i];
    if (!k.is_object()) return r.fail(path, "must be an object");
    KernelRate rate;
    MT_TRY(r.string(k, path, "format", rate.format));
    if (rate.format.empty()) return r.fail(path + ".format", "must not be empty");
    if (p.kernel(rate.format)) return r.fail(path + ".format", "repeats format '" + rate.format + "'");
    MT_TRY(r.rate(k, path, "decode_gbs", rate.decode_gbs));
    MT_TRY(r.rate(k, path, "prefill_gflops", rate.prefill_gflops));
    p.kernels.push_back(rate);
  }
  MT_TRY(r.object(root, "", "dense", dense));
  MT_TRY(r.rate(*dense, "dense", "bf16_gbs", p.dense_bf16_gbs));
  MT_TRY(r.rate(*dense, "dense", "fp8_gbs", p.dense_fp8_gbs));
  MT_TRY(r.rate(*dense, "dense", "q8_gbs", p.dense_q8_gbs));
  MT_TRY(r.rate(*dense, "dense", "q4_gbs", p.dense_q4_gbs));
  MT_TRY(r.rate(*dense, "dense", "attention_gflops", p.attention_gflops));
  return ok_status();
}

Status read_gpu(const FieldReader& r, const json& root, MachineProfile& p) {
  const json* gpu = nullptr;
  GpuProfile& g = p.gpu;
  MT_TRY(r.object(root, "", "gpu", gpu));
  MT_TRY(r.boolean(*gpu, "gpu", "present", g.present));
  MT_TRY(r.string(*gpu, "gpu", "name", g.name));
  MT_TRY(r.count(*gpu, "gpu", "vram_total_bytes", g.vram_total_bytes));
  MT_TRY(r.count(*gpu, "gpu", "vram_free_bytes", g.vram_free_bytes));
  MT_TRY(r.rate(*gpu, "gpu", "h2d_gbs", g.h2d_gbs));
  MT_TRY(r.rate(*gpu, "gpu", "hbm_gbs", g.hbm_gbs));
  MT_TRY(r.rate(*gpu, "gpu", "gemm_tflops", g.gemm_tflops));
  MT_TRY(r.string(*gpu, "gpu", "reason", g.reason));
  if (g.vram_free_bytes > g.vram_total_bytes) return r.fail("gpu.vram_free_bytes", "must not exceed gpu.vram_total_bytes");
  if (g.present && g.vram_total_bytes == 0) return r.fail("gpu.vram_total_bytes", "must be positive when a GPU is present");
  return ok_status();
}

}  // namespace

const KernelRate* MachineProfile::kernel(const std::string& format) const {
  for (const auto& k : kernels)
    if (k.format == format) return &k;
  return nullptr;
}

DiskFigures MachineProfile::current_disk() const {
  return {disk_path, disk_device, disk_rates, disk_read_gbs, disk_cpu_s_per_gb};
}

void MachineProfile::use_disk(const DiskFigures& d) {
  disk_path = d.path;
  disk_device = d.device;
  disk_rates = d.rates;
  disk_read_gbs = d.read_gbs;
  disk_cpu_s_per_gb = d.cpu_s_per_gb;
}

const DiskFigures* MachineProfile::disk_for_device(const std::string& device) const {
  for (const auto& d : other_disks)
    if (!device.empty() && d.device == device) return &d;
  return nullptr;
}

nlohmann::json profile_to_json(const MachineProfile& p) {
  json j;
  j["version"] = p.version;
  j["source"] = p.source;
  j["fingerprint"] = p.fingerprint;
  j["measured_at"] = p.measured_at;
  j["measure_seconds"] = p.measure_seconds;
  j["load_per_cpu"] = std::max(0.0, p.load_per_cpu);  // -1 (not recorded) is written as 0
  j["others_cpu_share"] = std::max(0.0, p.others_cpu_share);
  j["provisional"] = p.provisional;
  json spread = json::object();
  for (const auto& [k, v] : p.spread) spread[k] = v;
  j["spread"] = spread;
  j["cpu"] = {{"model", p.cpu_model},
              {"physical_cores", p.physical_cores},
              {"logical_cpus", p.logical_cpus},
              {"isa",
               {{"avx2", p.avx2},
                {"avx512", p.avx512},
                {"avx512_vnni", p.avx512_vnni},
                {"avx512_bf16", p.avx512_bf16},
                {"amx", p.amx}}}};
  json nodes = json::array();
  for (const auto& n : p.numa_nodes)
    nodes.push_back({{"os_index", n.os_index}, {"memory_bytes", n.memory_bytes}, {"read_gbs", n.read_gbs}});
  j["ram"] = {{"total_bytes", p.ram_total_bytes},
              {"available_bytes", p.ram_available_bytes},
              {"read_gbs", p.ram_read_gbs},
              {"numa_nodes", nodes}};
  j["disk"] = disk_json(p.current_disk());
  json others = json::array();
  for (const auto& d : p.other_disks) others.push_back(disk_json(d));
  j["other_disks"] = others;
  json kernels = json::array();
  for (const auto& k : p.kernels)
    kernels.push_back({{"format", k.format}, {"decode_gbs", k.decode_gbs}, {"prefill_gflops", k.prefill_gflops}});
  j["kernels"] = kernels;
  j["dense"] = {{"bf16_gbs", p.dense_bf16_gbs}, {"fp8_gbs", p.dense_fp8_gbs},         {"q8_gbs", p.dense_q8_gbs},
                {"q4_gbs", p.dense_q4_gbs},     {"attention_gflops", p.attention_gflops}};
  const GpuProfile& g = p.gpu;
  j["gpu"] = {{"present", g.present},         {"name", g.name},
              {"vram_total_bytes", g.vram_total_bytes}, {"vram_free_bytes", g.vram_free_bytes},
              {"h2d_gbs", g.h2d_gbs},         {"hbm_gbs", g.hbm_gbs},
              {"gemm_tflops", g.gemm_tflops}, {"reason", g.reason}};
  return j;
}

Result<MachineProfile> profile_from_json(const nlohmann::json& j, const std::string& where) {
  const FieldReader r(where);
  if (!j.is_object()) return make_error(where + ": a machine profile must be a JSON object");
  MachineProfile p;
  MT_TRY(r.integer(j, "", "version", p.version, 0, 1 << 20));
  if (p.version != kProfileVersion)
    return make_error(where + ": field 'version' is " + std::to_string(p.version) + ", this moetier reads version " +
                      std::to_string(kProfileVersion) + "; " + kRemeasure);
  MT_TRY(r.string(j, "", "source", p.source));
  MT_TRY(r.string(j, "", "fingerprint", p.fingerprint));
  if (p.fingerprint.empty()) return r.fail("fingerprint", "must not be empty");
  MT_TRY(r.string(j, "", "measured_at", p.measured_at));
  MT_TRY(r.rate(j, "", "measure_seconds", p.measure_seconds));
  const JsonFields<json> top(j, where);
  MT_ASSIGN(p.load_per_cpu, top.number("load_per_cpu", 0.0, 1e6));
  MT_ASSIGN(p.others_cpu_share, top.number("others_cpu_share", 0.0, 1.0));
  MT_ASSIGN(p.provisional, top.boolean("provisional"));
  MT_TRY(read_spread(r, j, where, p));
  MT_TRY(read_cpu(r, j, p));
  MT_TRY(read_ram(r, j, p));
  MT_TRY(read_disk(r, j, p));
  MT_TRY(read_kernels(r, j, p));
  MT_TRY(read_gpu(r, j, p));
  return p;
}

namespace {

// Seconds since the epoch of "YYYY-MM-DDTHH:MM:SSZ"; -1 when it is not that.
int64_t epoch_seconds(const std::string& iso) {
  int y, mo, d, h, mi, sec;
  if (std::sscanf(iso.c_str(), "%d-%d-%dT%d:%d:%dZ", &y, &mo, &d, &h, &mi, &sec) != 6) return -1;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || y < 1970 || y > 9999) return -1;
  // Days from the civil date (Howard Hinnant's algorithm).
  y -= mo <= 2;
  const int64_t era = y / 400, yoe = y - era * 400;
  const int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return (era * 146097 + doe - 719468) * 86400 + h * 3600 + mi * 60 + sec;
}

std::string age_text(int64_t s) {
  if (s < 0) return "";
  if (s < 120) return std::to_string(s) + " s ago";
  if (s < 7200) return std::to_string(s / 60) + " min ago";
  if (s < 2 * 86400) return std::to_string(s / 3600) + " h ago";
  return std::to_string(s / 86400) + " days ago";
}

}  // namespace

std::string utc_now_iso() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string profile_provenance(const MachineProfile& p, const std::string& now_utc) {
  std::string s = "profile: " + p.source;
  if (!p.measured_at.empty()) {
    s += " " + p.measured_at;
    const int64_t a = epoch_seconds(p.measured_at), b = epoch_seconds(now_utc);
    if (a >= 0 && b >= a) s += " (" + age_text(b - a) + ")";
    char load[160];
    if (p.load_per_cpu >= 0)
      std::snprintf(load, sizeof load, ", load %.2f per CPU, other processes %.0f%% of the CPUs while measuring",
                    p.load_per_cpu, 100.0 * std::max(0.0, p.others_cpu_share));
    else std::snprintf(load, sizeof load, ", load not recorded");
    s += load;
    if (p.provisional) s += " - PROVISIONAL: measured under load, figures likely low; re-measured at its next use";
    // The noisiest figure: how far its repeated measurements disagreed.
    auto worst = std::max_element(p.spread.begin(), p.spread.end(),
                                  [](const auto& a, const auto& b) { return a.second < b.second; });
    if (worst != p.spread.end()) {
      char sp[160];
      std::snprintf(sp, sizeof sp, "; largest spread over repeats %.0f%% (%s)%s", 100.0 * worst->second,
                    worst->first.c_str(), worst->second > kNoisySpread ? " - NOISY" : "");
      s += sp;
    }
    if (!p.disk_device.empty()) s += "; disk figures from device " + p.disk_device + " (" + p.disk_path + ")";
  }
  std::vector<std::string> assumed;
  if (p.ram_read_gbs <= 0) assumed.push_back("RAM bandwidth");
  if (p.disk_read_gbs <= 0) assumed.push_back("disk bandwidth");
  for (const char* f : {"q4", "q8", "bf16"}) {
    const KernelRate* k = p.kernel(f);
    if (!k || k->decode_gbs <= 0) assumed.push_back(std::string(f) + " expert kernels");
  }
  if (p.dense_bf16_gbs <= 0) assumed.push_back("dense bf16 matmul");
  if (p.dense_fp8_gbs <= 0) assumed.push_back("dense fp8 matmul");
  if (p.dense_q8_gbs <= 0) assumed.push_back("packed dense q8 matmul");
  if (p.dense_q4_gbs <= 0) assumed.push_back("packed dense q4 matmul");
  if (p.attention_gflops <= 0) assumed.push_back("CPU attention");
  if (p.gpu.present && p.gpu.hbm_gbs <= 0) assumed.push_back("GPU bandwidth");
  s += assumed.empty() ? "; every figure measured" : "; assumed by rule (docs/planner.md), not measured: ";
  for (size_t i = 0; i < assumed.size(); ++i) s += (i ? ", " : "") + assumed[i];
  return s;
}

Result<MachineProfile> load_profile(const std::filesystem::path& file) {
  const std::string name = file.string();
  std::error_code ec;
  if (!std::filesystem::exists(file, ec))
    return make_error(name + ": no machine profile there; run `moetier profile` to measure this machine");
  auto text = read_text_file(file);
  if (!text) return make_error(text.error() + " (the machine profile); " + kRemeasure);
  json j;
  try {
    j = json::parse(*text);
  } catch (const json::parse_error& e) {
    return make_error(name + ": the machine profile is not valid JSON (truncated or corrupt? byte " +
                      std::to_string(e.byte) + "); " + kRemeasure);
  }
  auto p = profile_from_json(j, name);
  if (!p.ok() && p.error().find("moetier profile") == std::string::npos)
    return make_error(p.error() + "; " + kRemeasure);
  return p;
}

Status save_profile(const std::filesystem::path& file, const MachineProfile& p) {
  const std::string name = file.string();
  std::error_code ec;
  if (file.has_parent_path()) {
    std::filesystem::create_directories(file.parent_path(), ec);
    if (ec) return make_error(name + ": cannot create directory " + file.parent_path().string() + ": " + ec.message());
  }
  // Invalid UTF-8 (a CPU name or path from the OS) is replaced rather than thrown on.
  const std::string text = profile_to_json(p).dump(2, ' ', false, json::error_handler_t::replace) + "\n";
  if (Status st = write_file_atomic(file, text); !st)
    return make_error(st.error() + " (writing the machine profile)");
  return ok_status();
}

std::filesystem::path default_profile_path() {
  // XDG: a relative XDG_CACHE_HOME is invalid and must be ignored.
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && xdg[0] == '/') return std::filesystem::path(xdg) / "moetier" / "profile.json";
  const char* home = std::getenv("HOME");
  if (home && home[0] != '\0') return std::filesystem::path(home) / ".cache" / "moetier" / "profile.json";
  std::error_code ec;
  auto tmp = std::filesystem::temp_directory_path(ec);
  if (ec) tmp = "/tmp";
  return tmp / "moetier" / "profile.json";
}

}  // namespace mt::planner
