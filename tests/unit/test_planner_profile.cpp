#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "planner/machine_profile.h"
#include "tests/unit/temp_dir.h"

using namespace mt;
using namespace mt::planner;
using json = nlohmann::json;

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// A measured-looking profile with every list non-empty, so every field appears in its JSON.
MachineProfile sample_profile() {
  MachineProfile p;
  p.source = "measured";
  p.fingerprint = "v1-0123456789abcdef";
  p.measured_at = "2025-01-02T03:04:05Z";
  p.measure_seconds = 17.5;
  p.cpu_model = "AMD EPYC 7B13";
  p.physical_cores = 2;
  p.logical_cpus = 4;
  p.avx2 = true;
  p.ram_total_bytes = 24ull << 30;
  p.ram_available_bytes = 20ull << 30;
  p.ram_read_gbs = 31.25;
  p.numa_nodes = {{0, 12ull << 30, 15.5}, {1, 12ull << 30, 0}};
  p.disk_path = "/models/v3";
  p.disk_rates = {{1 << 20, 1, 0.8}, {1 << 20, 16, 2.5}, {23ull << 20, 4, 3.0}};
  p.disk_read_gbs = 3.0;
  p.disk_device = "259:1";
  p.disk_cpu_s_per_gb = 0.125;
  p.other_disks = {{"/mnt/hdd", "8:17", {{1 << 20, 4, 0.25}}, 0.25, 0.5}};
  p.others_cpu_share = 0.03;
  p.load_per_cpu = 0.25;
  p.spread = {{"ram.read_gbs", 0.02}, {"disk.read_gbs", 0.125}};
  p.dense_q8_gbs = 27.5;
  p.dense_q4_gbs = 25.25;
  p.kernels = {{"q4", 29.0, 80.5}, {"q8", 28.0, 75.0}, {"bf16", 29.5, 70.25}};
  p.dense_bf16_gbs = 12.5;
  p.dense_fp8_gbs = 9.75;
  p.attention_gflops = 45.5;
  p.gpu.present = true;
  p.gpu.name = "NVIDIA H100";
  p.gpu.vram_total_bytes = 80ull << 30;
  p.gpu.vram_free_bytes = 79ull << 30;
  p.gpu.h2d_gbs = 50;
  p.gpu.hbm_gbs = 3000;
  p.gpu.gemm_tflops = 700;
  return p;
}

// "/ram/numa_nodes/0/os_index" -> "ram.numa_nodes[0].os_index", the name errors use.
std::string dotted(const std::string& pointer) {
  std::string out;
  size_t i = 1;
  while (i <= pointer.size()) {
    size_t j = pointer.find('/', i);
    if (j == std::string::npos) j = pointer.size();
    const std::string part = pointer.substr(i, j - i);
    if (!part.empty() && std::isdigit(static_cast<unsigned char>(part[0]))) out += "[" + part + "]";
    else out += (out.empty() ? "" : ".") + part;
    i = j + 1;
  }
  return out;
}

// Every path in the document, objects and arrays included (not the array elements themselves).
void all_paths(const json& j, const std::string& at, std::vector<std::string>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      out.push_back(at + "/" + it.key());
      all_paths(it.value(), at + "/" + it.key(), out);
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) all_paths(j[i], at + "/" + std::to_string(i), out);
  }
}

void check_error_names(const json& j, const std::string& field) {
  auto r = profile_from_json(j, "where.json");
  INFO(field << ": " << (r.ok() ? std::string("accepted") : r.error()));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find("where.json") != std::string::npos);
  CHECK(r.error().find("'" + field + "'") != std::string::npos);
}

}  // namespace

TEST_CASE("a profile survives the JSON round trip", "[planner]") {
  const MachineProfile p = sample_profile();
  const json j = profile_to_json(p);
  auto back = profile_from_json(json::parse(j.dump()), "roundtrip");
  REQUIRE(back.ok());
  CHECK(profile_to_json(*back) == j);
  CHECK(back->cpu_model == p.cpu_model);
  CHECK(back->numa_nodes.size() == 2);
  CHECK(back->disk_rates[2].block_bytes == 23ull << 20);
  CHECK(back->kernel("q8")->prefill_gflops == 75.0);
  CHECK(back->kernel("fp8") == nullptr);
  CHECK(back->gpu.vram_free_bytes == 79ull << 30);
}

TEST_CASE("every missing or mistyped profile field is an error naming it", "[planner]") {
  const json good = profile_to_json(sample_profile());
  std::vector<std::string> paths;
  all_paths(good, "", paths);
  REQUIRE(paths.size() > 40);
  for (const auto& ptr : paths) {
    const json::json_pointer jp(ptr);
    const std::string field = dotted(ptr);
    // A spread is kept per figure measured more than once: any may be absent.
    if (ptr.rfind("/spread/", 0) != 0) {
      json missing = good;
      missing[jp.parent_pointer()].erase(jp.back());
      check_error_names(missing, field);
    }

    const json& v = good[jp];
    json wrong = good;
    wrong[jp] = v.is_string() ? json(5) : json("x");
    check_error_names(wrong, field);
    if (v.is_number()) {
      wrong[jp] = -1;
      check_error_names(wrong, field);
    }
    if (v.is_number_float()) {
      wrong[jp] = std::nan("");  // a NaN built in code (JSON text cannot hold one)
      check_error_names(wrong, field);
    }
  }
}

TEST_CASE("profile values out of range are errors naming the field", "[planner]") {
  const json good = profile_to_json(sample_profile());
  auto with = [&](const std::string& ptr, const json& v) {
    json j = good;
    j[json::json_pointer(ptr)] = v;
    return j;
  };
  check_error_names(with("/version", 1), "version");
  check_error_names(with("/version", 3), "version");
  check_error_names(with("/others_cpu_share", 1.5), "others_cpu_share");
  check_error_names(with("/other_disks/0/device", "259:1"), "other_disks[0].device");
  check_error_names(with("/cpu/physical_cores", 0), "cpu.physical_cores");
  check_error_names(with("/cpu/logical_cpus", 1), "cpu.logical_cpus");
  check_error_names(with("/cpu/physical_cores", 2.5), "cpu.physical_cores");
  check_error_names(with("/ram/available_bytes", 25ull << 30), "ram.available_bytes");
  check_error_names(with("/ram/total_bytes", 0), "ram.total_bytes");
  check_error_names(with("/ram/numa_nodes/1/os_index", 0), "ram.numa_nodes[1].os_index");
  check_error_names(with("/disk/rates/0/queue_depth", 0), "disk.rates[0].queue_depth");
  check_error_names(with("/disk/rates/1/block_bytes", 0), "disk.rates[1].block_bytes");
  check_error_names(with("/kernels/1/format", "q4"), "kernels[1].format");
  check_error_names(with("/kernels/1/format", ""), "kernels[1].format");
  check_error_names(with("/gpu/vram_free_bytes", 81ull << 30), "gpu.vram_free_bytes");
  check_error_names(with("/fingerprint", ""), "fingerprint");
  CHECK_FALSE(profile_from_json(json::array(), "x").ok());
  // An integral float is accepted for a byte count (hand-edited files).
  CHECK(profile_from_json(with("/ram/total_bytes", 2.5e10), "x").ok());
}

TEST_CASE("describe_hardware gives the stated numbers and derives the rest by its rules", "[planner]") {
  auto r = describe_hardware("gpu=24G,ram=512G@300GB/s,disk=7GB/s,cores=32,isa=avx512");
  REQUIRE(r.ok());
  const MachineProfile& p = *r;
  CHECK(p.ram_total_bytes == 512ull << 30);
  CHECK(p.ram_available_bytes == 512ull << 30);
  CHECK(p.ram_read_gbs == 300.0);
  CHECK(p.physical_cores == 32);
  CHECK(p.logical_cpus == 32);
  CHECK(p.avx2);
  CHECK(p.avx512);
  CHECK(p.avx512_vnni);
  CHECK_FALSE(p.avx512_bf16);
  CHECK_FALSE(p.amx);
  CHECK(p.fingerprint == "described");
  CHECK(p.source.rfind("described: gpu=24G", 0) == 0);
  CHECK(p.source.find("assumed") != std::string::npos);
  REQUIRE(p.numa_nodes.size() == 1);
  CHECK(p.numa_nodes[0].memory_bytes == 512ull << 30);
  REQUIRE(p.disk_rates.size() == 1);
  CHECK(p.disk_rates[0].gbs == 7.0);
  CHECK(p.disk_rates[0].block_bytes == 4ull << 20);
  CHECK(p.disk_rates[0].queue_depth == 8);
  CHECK(p.disk_read_gbs == 7.0);
  CHECK(p.gpu.present);
  CHECK(p.gpu.vram_total_bytes == 24ull << 30);
  CHECK(p.gpu.vram_free_bytes == 24ull << 30);
  CHECK(p.gpu.hbm_gbs == 1000.0);
  CHECK(p.gpu.h2d_gbs == 25.0);
  CHECK(p.gpu.gemm_tflops == 165.0);
  // AVX-512 rules (docs/planner.md): decode min(0.98 x 300, 32 x 17) = 294 (RAM-bound);
  // prefill per core q4 265, q8 255, bf16 90; packed dense min(0.92 x 300, 32 x 16.5) = 276;
  // bf16 min(0.9 x 300, 528) = 270; fp8 min(0.5 x 300, 32 x 8) = 150; MLA 32 x 13.6.
  for (const char* f : {"q4", "q8", "bf16"}) {
    const KernelRate* k = p.kernel(f);
    REQUIRE(k);
    CHECK(k->decode_gbs == Approx(294.0));
  }
  CHECK(p.kernel("q4")->prefill_gflops == Approx(32 * 265.0));
  CHECK(p.kernel("q8")->prefill_gflops == Approx(32 * 255.0));
  CHECK(p.kernel("bf16")->prefill_gflops == Approx(32 * 90.0));
  CHECK(p.dense_q8_gbs == Approx(276.0));
  CHECK(p.dense_q4_gbs == Approx(276.0));
  CHECK(p.dense_bf16_gbs == Approx(270.0));
  CHECK(p.dense_fp8_gbs == Approx(150.0));
  CHECK(p.attention_gflops == Approx(32 * 13.6));
  // A described profile is a valid profile.
  CHECK(profile_from_json(profile_to_json(p), "described").ok());
}

TEST_CASE("describe_hardware derives RAM bandwidth and core-bound rates when not given", "[planner]") {
  auto r = describe_hardware(" cores=4 , ram=64G ");
  REQUIRE(r.ok());
  CHECK(r->ram_read_gbs == Approx(32.0));  // 8 GB/s per core
  CHECK(r->kernel("q4")->decode_gbs == Approx(0.98 * 32));  // RAM-bound: 4 cores x 17 > 31.4
  CHECK(r->kernel("q8")->prefill_gflops == Approx(4 * 100.0));  // AVX2 (isa not given)
  CHECK_FALSE(r->gpu.present);
  CHECK(r->disk_rates.empty());
  CHECK(r->source.find("8 GB/s per core") != std::string::npos);

  auto big = describe_hardware("cores=128,ram=1T,isa=amx,gpu=80G,numa=2,gpu-bw=2TB/s,pcie=64,disk=none");
  REQUIRE(big.ok());
  CHECK(big->ram_read_gbs == Approx(460.0));  // capped
  CHECK(big->amx);
  CHECK(big->avx512_bf16);
  CHECK(big->kernel("bf16")->prefill_gflops == Approx(128 * 90.0));  // AMX: the AVX-512 figures
  CHECK(big->kernel("q4")->decode_gbs == Approx(0.98 * 460));
  CHECK(big->gpu.hbm_gbs == Approx(2000.0));
  CHECK(big->gpu.h2d_gbs == Approx(64.0));
  CHECK(big->gpu.gemm_tflops == Approx(750.0));
  REQUIRE(big->numa_nodes.size() == 2);
  CHECK(big->numa_nodes[1].memory_bytes == 512ull << 30);
  CHECK(big->disk_read_gbs == 0.0);

  auto core_bound = describe_hardware("cores=2,ram=16G@100GB/s,isa=avx2,gpu=0");
  REQUIRE(core_bound.ok());
  CHECK(core_bound->kernel("q4")->decode_gbs == Approx(34.0));  // 2 cores x 17 < 0.98 x 100
  CHECK(core_bound->kernel("q8")->decode_gbs == Approx(34.0));
  CHECK(core_bound->dense_fp8_gbs == Approx(16.0));               // 2 cores x 8, compute-bound
  CHECK_FALSE(core_bound->gpu.present);

  auto no_disk = describe_hardware("cores=2,ram=16G,disk=0GB/s");
  REQUIRE(no_disk.ok());
  CHECK(no_disk->disk_rates.empty());
  CHECK(no_disk->disk_read_gbs == 0.0);
}

TEST_CASE("bad hardware descriptions are errors naming the key", "[planner]") {
  const std::pair<const char*, const char*> cases[] = {
      {"cores=8,ram=64G,flux=3", "'flux'"},
      {"cores=8,ram=64G,cores=9", "'cores'"},
      {"cores=8,ram=abc", "'ram'"},
      {"ram=64G", "'cores'"},
      {"cores=8", "'ram'"},
      {"cores=8,ram=64G,gpu=-1G", "'gpu'"},
      {"cores=8,ram=64G@fast", "'ram'"},
      {"cores=8,ram=64", "'ram'"},
      {"cores=0,ram=64G", "'cores'"},
      {"cores=2.5,ram=64G", "'cores'"},
      {"cores=8,ram=64G,isa=sse4", "'isa'"},
      {"cores=8,ram=64G,disk=fast", "'disk'"},
      {"cores=8,ram=64G,gpu-bw=900GB/s", "'gpu-bw'"},
      {"cores=8,ram=64G,gpu=24G,gpu-tflops=-3", "'gpu-tflops'"},
      {"cores=8,ram=64G,numa=9", "'numa'"},
      {"cores=8,ram=64G,gpu=", "'gpu'"},
      {"cores=8,ram=64G,disk=0g\xc0", "'disk'"},  // a zero with a bad unit is not "none"
  };
  for (const auto& [spec, key] : cases) {
    auto r = describe_hardware(spec);
    INFO(spec << " -> " << (r.ok() ? std::string("accepted") : r.error()));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().find(key) != std::string::npos);
    CHECK(r.error().find("key=value") != std::string::npos);  // shows the grammar
  }
  for (const char* spec : {"", "   ", "cores=8,,ram=64G", "cores=8,ram=64G,", "nonsense-preset", "cores"}) {
    auto r = describe_hardware(spec);
    INFO("'" << spec << "' -> " << (r.ok() ? std::string("accepted") : r.error()));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().find("key=value") != std::string::npos);
  }
}

TEST_CASE("hardware presets describe valid machines", "[planner]") {
  const auto names = hardware_preset_names();
  REQUIRE(names.size() >= 4);
  const std::string help = hardware_preset_help();
  for (const auto& n : names) {
    INFO(n);
    CHECK(help.find(n) != std::string::npos);
    auto p = describe_hardware(n);
    REQUIRE(p.ok());
    CHECK(p->source.rfind("preset: " + n, 0) == 0);
    CHECK(p->ram_read_gbs > 0);
    CHECK(profile_from_json(profile_to_json(*p), n).ok());
  }
  auto g = describe_hardware("rtx4090-ddr5-8ch");
  REQUIRE(g.ok());
  CHECK(g->gpu.vram_total_bytes == 24ull << 30);
  CHECK(g->ram_total_bytes == 512ull << 30);
  CHECK(g->ram_read_gbs == 250.0);
  CHECK(g->physical_cores == 32);
  CHECK(g->avx512);
  CHECK(g->disk_read_gbs == 7.0);
  auto cpu = describe_hardware("cpu-only-768g");
  REQUIRE(cpu.ok());
  CHECK_FALSE(cpu->gpu.present);
  CHECK(cpu->ram_total_bytes == 768ull << 30);
  CHECK(describe_hardware("h100-epyc-256g")->gpu.hbm_gbs == 3350.0);
  CHECK_FALSE(describe_hardware("workstation-3090-128g")->avx512);
}

TEST_CASE("save and load a profile; damaged files are clear errors", "[planner]") {
  test::TempDir dir("profile");
  const auto file = dir.path() / "sub" / "dir" / "profile.json";
  const MachineProfile p = sample_profile();
  REQUIRE(save_profile(file, p).ok());
  CHECK_FALSE(std::filesystem::exists(file.string() + ".tmp"));
  auto back = load_profile(file);
  REQUIRE(back.ok());
  CHECK(profile_to_json(*back) == profile_to_json(p));

  // Truncated: not valid JSON.
  const auto size = std::filesystem::file_size(file);
  std::filesystem::resize_file(file, size / 2);
  auto t = load_profile(file);
  REQUIRE_FALSE(t.ok());
  CHECK(t.error().find(file.string()) != std::string::npos);
  CHECK(t.error().find("moetier profile") != std::string::npos);

  // Valid JSON, missing a field.
  {
    json j = profile_to_json(p);
    j["ram"].erase("read_gbs");
    std::ofstream(file) << j.dump();
  }
  auto m = load_profile(file);
  REQUIRE_FALSE(m.ok());
  CHECK(m.error().find("'ram.read_gbs'") != std::string::npos);
  CHECK(m.error().find("moetier profile") != std::string::npos);

  auto none = load_profile(dir.path() / "absent.json");
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().find("absent.json") != std::string::npos);
  CHECK(none.error().find("moetier profile") != std::string::npos);

  // Bytes from the OS that are not UTF-8 (a CPU name, a path) do not stop the save.
  MachineProfile odd = p;
  odd.cpu_model = "CPU \xc0\xff";
  REQUIRE(save_profile(file, odd).ok());
  CHECK(load_profile(file).ok());

  // Saving over an existing profile replaces it.
  MachineProfile p2 = p;
  p2.ram_read_gbs = 99;
  REQUIRE(save_profile(file, p2).ok());
  CHECK(load_profile(file)->ram_read_gbs == 99.0);
}

TEST_CASE("the default profile path follows XDG_CACHE_HOME", "[planner]") {
  const char* old = std::getenv("XDG_CACHE_HOME");
  const std::string saved = old ? old : "";
  ::setenv("XDG_CACHE_HOME", "/some/cache", 1);
  CHECK(default_profile_path() == std::filesystem::path("/some/cache/moetier/profile.json"));
  ::setenv("XDG_CACHE_HOME", "relative/ignored", 1);
  CHECK(default_profile_path().filename() == "profile.json");
  CHECK(default_profile_path().string().find("relative") == std::string::npos);
  if (old) ::setenv("XDG_CACHE_HOME", saved.c_str(), 1);
  else ::unsetenv("XDG_CACHE_HOME");
}
