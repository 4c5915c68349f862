// Tests for offload/expert_store and offload/crc32c: the crc32c check values (both
// implementations, against an independent bitwise form), the writer → open round trip, the
// staging directory and overwrite rules, interrupted writes, and that every structural problem
// of a store (manifest fields, missing/truncated files) is one error naming file, layer, expert.
#include <catch2/catch.hpp>

#include "tests/unit/temp_dir.h"
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "offload/expert_store.h"
#include "runtime/core/expert_format.h"

namespace fs = std::filesystem;
using namespace mt::offload;
using mt::DType;
using mt::ExpertQuant;
using mt::packed_matrix_bytes;
using Bytes = std::vector<uint8_t>;
using ojson = nlohmann::ordered_json;

namespace {

// Scratch directories: tests/unit/temp_dir.h.
struct TempDir : mt::test::TempDir {
  TempDir() : mt::test::TempDir("store_test") {}
};

// Bit-at-a-time CRC-32C, written from the definition (reflected 0x1EDC6F41 = 0x82F63B78).
uint32_t crc32c_bitwise(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return c ^ 0xffffffffu;
}

Bytes random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes v(n);
  for (auto& c : v) c = static_cast<uint8_t>(rng());
  return v;
}

Bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

const char* kConfig = R"({"model_type":"deepseek_v3","hidden_size":64,"num_hidden_layers":4,"n_routed_experts":8,"rope_scaling":{"factor":40,"type":"yarn"}})";

StoreManifest header(uint64_t blob_bytes = 8192) {
  StoreManifest h;
  h.config_json = kConfig;
  h.expert_quant = "q4";
  h.group = 32;
  h.hidden = 64;
  h.inter = 32;
  h.blob_bytes = blob_bytes;
  return h;
}

using BlobMap = std::map<std::pair<int32_t, int32_t>, Bytes>;

// Two dense tensors: an F32 vector (5 values) and a packed Q8 matrix [20, 64] (group 32).
const Bytes kDenseVec = random_bytes(20, 11);
const Bytes kDenseMat = random_bytes(packed_matrix_bytes(ExpertQuant::Q8, 20, 64, 32), 12);
void add_dense_tensors(ExpertStoreWriter& w) {
  REQUIRE(w.add_dense("norm.weight", DType::F32, {5}, kDenseVec.data(), kDenseVec.size()).ok());
  REQUIRE(w.add_dense("proj.weight", DType::Q8_PACKED, {20, 64}, kDenseMat.data(), kDenseMat.size()).ok());
}

// Writes a store of `layers` × `experts` random blobs (added in shuffled order) into dir.
BlobMap write_store(const fs::path& dir, const std::vector<int32_t>& layers, int experts, uint64_t blob_bytes,
                    uint64_t seed = 1) {
  auto w = ExpertStoreWriter::create(dir, header(blob_bytes), false);
  REQUIRE(w.ok());
  add_dense_tensors(*w);
  BlobMap blobs;
  std::vector<std::pair<int32_t, int32_t>> order;
  for (int32_t l : layers)
    for (int32_t e = 0; e < experts; ++e) order.emplace_back(l, e);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  for (auto [l, e] : order) {
    Bytes b = random_bytes(blob_bytes, seed * 1000003u + static_cast<uint64_t>(l) * 1009u + static_cast<uint64_t>(e));
    auto s = w->add_blob(l, e, b.data(), b.size());
    REQUIRE(s.ok());
    blobs[{l, e}] = std::move(b);
  }
  auto s = w->finish();
  INFO((s.ok() ? "" : s.error()));
  REQUIRE(s.ok());
  return blobs;
}

// The manifest of a small valid store, as JSON, for editing in tests.
ojson valid_manifest() {
  ojson j;
  j["format"] = "moetier-expert-store";
  j["version"] = 2;
  j["config"] = ojson::parse(kConfig);
  j["experts"] = {{"quant", "q4"}, {"group", 32}, {"hidden", 64}, {"inter", 32}, {"blob_bytes", 4096}};
  j["dense_file"] = "dense.bin";
  j["dense"] = {{"quant", "q8"}, {"group", 32}, {"tensors", ojson::array()}};
  j["dense"]["tensors"].push_back({{"name", "a"}, {"dtype", "BF16"}, {"shape", {3, 5}}, {"offset", 0}, {"bytes", 30},
                                   {"crc32c", 7}});
  j["dense"]["tensors"].push_back({{"name", "b"}, {"dtype", "Q4_PACKED"}, {"shape", {20, 64}}, {"offset", 4096},
                                   {"bytes", packed_matrix_bytes(ExpertQuant::Q4, 20, 64, 32)}, {"crc32c", 8}});
  j["files"] = {"experts-L001.bin", "experts-L002.bin"};
  j["blobs"] = ojson::array();
  for (int l = 1; l <= 2; ++l)
    for (int e = 0; e < 3; ++e)
      j["blobs"].push_back({{"layer", l}, {"expert", e}, {"file", l - 1}, {"offset", e * 4096}, {"bytes", 4096},
                            {"crc32c", 1234}});
  return j;
}

std::string parse_error(const ojson& j) {
  auto r = parse_manifest(j.dump(), "store/manifest.json");
  if (r.ok()) return "";
  return r.error();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// crc32c

TEST_CASE("crc32c: standard check values", "[crc32c]") {
  const std::string s = "123456789";
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  CHECK(crc32c(p, s.size()) == 0xE3069283u);
  CHECK(crc32c_portable(p, s.size()) == 0xE3069283u);
  CHECK(crc32c_hw(p, s.size()) == 0xE3069283u);
  CHECK(crc32c_bitwise(p, s.size()) == 0xE3069283u);
  CHECK(crc32c(nullptr, 0) == 0u);

  // RFC 3720 (iSCSI) B.4 test vectors.
  Bytes zeros(32, 0), ones(32, 0xff), up(32), down(32);
  for (int i = 0; i < 32; ++i) {
    up[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
    down[static_cast<size_t>(i)] = static_cast<uint8_t>(31 - i);
  }
  for (auto fn : {&crc32c_portable, &crc32c_hw, &crc32c}) {
    CHECK(fn(zeros.data(), 32, 0) == 0x8A9136AAu);
    CHECK(fn(ones.data(), 32, 0) == 0x62A8AB43u);
    CHECK(fn(up.data(), 32, 0) == 0x46DD794Eu);
    CHECK(fn(down.data(), 32, 0) == 0x113FDB5Cu);
  }
  if (!crc32c_hw_available()) WARN("no SSE4.2 on this CPU: crc32c_hw is the table-driven form");
}

TEST_CASE("crc32c: random data, both implementations, every alignment and length", "[crc32c]") {
  // Up to 3 x 8192 + 3 x 256 + a tail and beyond: every stage of the interleaved hardware path.
  const Bytes data = random_bytes(60000, 42);
  std::mt19937 rng(7);
  for (int t = 0; t < 300; ++t) {
    const size_t off = rng() % 64;
    const size_t len = t < 100 ? static_cast<size_t>(t)
                       : t < 200 ? rng() % 2000
                                 : rng() % (data.size() - off);
    const uint8_t* p = data.data() + off;
    const uint32_t want = crc32c_bitwise(p, len);
    INFO("offset " << off << " length " << len);
    REQUIRE(crc32c_portable(p, len) == want);
    REQUIRE(crc32c_hw(p, len) == want);
    REQUIRE(crc32c(p, len) == want);
  }
  // Continuing a running checksum equals one pass over the concatenation.
  for (int t = 0; t < 100; ++t) {
    const size_t cut = rng() % data.size();
    for (auto fn : {&crc32c_portable, &crc32c_hw, &crc32c}) {
      const uint32_t a = fn(data.data(), cut, 0);
      CHECK(fn(data.data() + cut, data.size() - cut, a) == crc32c_bitwise(data.data(), data.size()));
    }
  }
  // A big buffer too (the hardware loop's unrolled path).
  const Bytes big = random_bytes(1 << 20, 3);
  CHECK(crc32c(big.data(), big.size()) == crc32c_portable(big.data(), big.size()));
  CHECK(crc32c_hw(big.data(), big.size()) == crc32c_bitwise(big.data(), big.size()));
}

// ---------------------------------------------------------------------------------------------
// writer and open

TEST_CASE("store: writer -> open round trip over several layers", "[store]") {
  TempDir t;
  const fs::path dir = t / "store";
  const uint64_t bb = 3 * 4096;
  const BlobMap blobs = write_store(dir, {3, 5, 7, 61}, 6, bb);

  CHECK(fs::is_directory(dir));
  CHECK_FALSE(fs::exists(t / "store.partial"));
  CHECK(ExpertStore::looks_like_store(dir));
  CHECK_FALSE(fs::exists(dir / "manifest.json.tmp"));

  auto st = ExpertStore::open(dir);
  INFO((st.ok() ? "" : st.error()));
  REQUIRE(st.ok());
  const StoreManifest& m = st->manifest();
  CHECK(m.version == kStoreFormatVersion);
  CHECK(m.expert_quant == "q4");
  CHECK(m.group == 32);
  CHECK(m.hidden == 64);
  CHECK(m.inter == 32);
  CHECK(m.blob_bytes == bb);
  CHECK(m.dense_file == "dense.bin");
  REQUIRE(m.dense.size() == 2);
  {
    const Bytes dense = read_file(dir / "dense.bin");
    const std::vector<const Bytes*> want = {&kDenseVec, &kDenseMat};
    for (size_t i = 0; i < 2; ++i) {
      const DenseTensorInfo& t = m.dense[i];
      CHECK(t.offset % kBlobAlign == 0);
      CHECK(t.bytes == want[i]->size());
      REQUIRE(t.offset + t.bytes <= dense.size());
      CHECK(std::equal(want[i]->begin(), want[i]->end(), dense.begin() + static_cast<std::ptrdiff_t>(t.offset)));
      CHECK(t.crc == crc32c(want[i]->data(), want[i]->size()));
    }
    CHECK(m.dense[0].name == "norm.weight");
    CHECK(m.dense[1].dtype == DType::Q8_PACKED);
    CHECK(m.dense[1].shape == std::vector<int64_t>{20, 64});
  }
  CHECK(ojson::parse(m.config_json) == ojson::parse(kConfig));
  REQUIRE(m.files == std::vector<std::string>{"experts-L003.bin", "experts-L005.bin", "experts-L007.bin",
                                               "experts-L061.bin"});
  REQUIRE(m.blobs.size() == blobs.size());
  // Sorted by (layer, expert).
  for (size_t i = 1; i < m.blobs.size(); ++i)
    CHECK(std::make_pair(m.blobs[i - 1].layer, m.blobs[i - 1].expert) <
          std::make_pair(m.blobs[i].layer, m.blobs[i].expert));

  std::map<uint32_t, Bytes> files;
  for (uint32_t f = 0; f < m.files.size(); ++f) {
    files[f] = read_file(st->file_path(f));
    CHECK(files[f].size() == 6 * bb);  // packed: no holes between aligned blobs of aligned size
  }
  for (const auto& [key, want] : blobs) {
    const BlobInfo* b = st->find(key.first, key.second);
    REQUIRE(b != nullptr);
    CHECK(b->layer == key.first);
    CHECK(b->expert == key.second);
    CHECK(b->bytes == bb);
    CHECK(b->offset % kBlobAlign == 0);
    CHECK(m.files[b->file] == blob_file_name(key.first));
    const Bytes& fb = files[b->file];
    REQUIRE(b->offset + b->bytes <= fb.size());
    CHECK(std::equal(want.begin(), want.end(), fb.begin() + static_cast<std::ptrdiff_t>(b->offset)));
    CHECK(b->crc == crc32c(want.data(), want.size()));
  }
  CHECK(st->find(3, 6) == nullptr);
  CHECK(st->find(4, 0) == nullptr);

  // The manifest's top-level keys come in the documented order.
  const Bytes text = read_file(dir / "manifest.json");
  const ojson j = ojson::parse(text.begin(), text.end());
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  CHECK(keys == std::vector<std::string>{"format", "version", "config", "experts", "dense_file", "dense", "files", "blobs"});
  CHECK(j["experts"]["blob_bytes"] == bb);
  CHECK(j["blobs"][0].contains("crc32c"));
}

TEST_CASE("store: manifest_to_json and parse_manifest round trip", "[store]") {
  auto m = parse_manifest(valid_manifest().dump(), "m.json");
  REQUIRE(m.ok());
  auto text = manifest_to_json(*m);
  REQUIRE(text.ok());
  auto m2 = parse_manifest(*text, "m2.json");
  REQUIRE(m2.ok());
  CHECK(m2->files == m->files);
  REQUIRE(m2->blobs.size() == m->blobs.size());
  for (size_t i = 0; i < m->blobs.size(); ++i) {
    CHECK(m2->blobs[i].layer == m->blobs[i].layer);
    CHECK(m2->blobs[i].offset == m->blobs[i].offset);
    CHECK(m2->blobs[i].crc == m->blobs[i].crc);
  }
  CHECK(m2->config_json == m->config_json);
  CHECK(blob_file_name(7) == "experts-L007.bin");
  CHECK(blob_file_name(1234) == "experts-L1234.bin");
}

TEST_CASE("store: create refuses an existing directory unless overwrite, and only replaces stores", "[store]") {
  TempDir t;
  const fs::path dir = t / "store";
  const BlobMap first = write_store(dir, {0}, 2, 4096, 1);

  auto again = ExpertStoreWriter::create(dir, header(4096), false);
  REQUIRE_FALSE(again.ok());
  CHECK_THAT(again.error(), Catch::Contains("already exists"));
  CHECK_THAT(again.error(), Catch::Contains(dir.string()));

  // Overwrite replaces the store; until finish() the old one stays intact.
  {
    auto w = ExpertStoreWriter::create(dir, header(4096), true);
    REQUIRE(w.ok());
    CHECK(ExpertStore::open(dir).ok());
    write_file(w->staging_dir() / "dense.safetensors", "x");
    Bytes b = random_bytes(4096, 99);
    REQUIRE(w->add_blob(9, 0, b.data(), b.size()).ok());
    auto s = w->finish();
    REQUIRE(s.ok());
  }
  auto st = ExpertStore::open(dir);
  REQUIRE(st.ok());
  CHECK(st->manifest().blobs.size() == 1);
  CHECK(st->find(9, 0) != nullptr);
  CHECK(st->find(0, 0) == nullptr);
  CHECK_FALSE(fs::exists(t / "store.old"));
  CHECK_FALSE(fs::exists(t / "store.partial"));

  // A directory with other things in it is never removed, overwrite or not.
  const fs::path other = t / "home";
  fs::create_directories(other);
  write_file(other / "precious.txt", "keep me");
  auto w2 = ExpertStoreWriter::create(other, header(4096), true);
  REQUIRE_FALSE(w2.ok());
  CHECK_THAT(w2.error(), Catch::Contains("refusing to overwrite"));
  CHECK(fs::exists(other / "precious.txt"));

  // An empty directory may be replaced.
  const fs::path empty = t / "empty";
  fs::create_directories(empty);
  CHECK(ExpertStoreWriter::create(empty, header(4096), true).ok());
}

TEST_CASE("store: a stale .partial directory is replaced", "[store]") {
  TempDir t;
  const fs::path dir = t / "store";
  fs::create_directories(t / "store.partial");
  write_file(t / "store.partial" / "junk", "junk");
  write_store(dir, {1}, 1, 4096);
  CHECK_FALSE(fs::exists(t / "store.partial"));
  CHECK_FALSE(fs::exists(dir / "junk"));
  CHECK(ExpertStore::open(dir).ok());
}

TEST_CASE("store: an interrupted write leaves no store", "[store]") {
  TempDir t;
  const fs::path dir = t / "store";
  SECTION("writer destroyed before finish") {
    {
      auto w = ExpertStoreWriter::create(dir, header(4096), false);
      REQUIRE(w.ok());
      CHECK(fs::is_directory(t / "store.partial"));
      CHECK(w->staging_dir() == t / "store.partial");
      Bytes b = random_bytes(4096, 5);
      REQUIRE(w->add_blob(0, 0, b.data(), b.size()).ok());
      write_file(w->staging_dir() / "dense.safetensors", "x");
    }
    CHECK_FALSE(fs::exists(dir));
    CHECK_FALSE(fs::exists(t / "store.partial"));
  }
  SECTION("exception in the middle of the conversion") {
    try {
      auto w = ExpertStoreWriter::create(dir, header(4096), false);
      REQUIRE(w.ok());
      Bytes b = random_bytes(4096, 5);
      for (int e = 0; e < 10; ++e) {
        REQUIRE(w->add_blob(2, e, b.data(), b.size()).ok());
        if (e == 4) throw std::runtime_error("conversion interrupted");
      }
      FAIL("not reached");
    } catch (const std::runtime_error&) {
    }
    CHECK_FALSE(fs::exists(dir));
    CHECK_FALSE(fs::exists(t / "store.partial"));
  }
  SECTION("a moved-from writer does nothing; the moved-to one owns the staging directory") {
    auto w = ExpertStoreWriter::create(dir, header(4096), false);
    REQUIRE(w.ok());
    ExpertStoreWriter w2 = std::move(*w);
    Bytes b = random_bytes(4096, 5);
    CHECK_FALSE(w->add_blob(0, 0, b.data(), b.size()).ok());
    CHECK(w2.add_blob(0, 0, b.data(), b.size()).ok());
    write_file(w2.staging_dir() / "dense.safetensors", "x");
    REQUIRE(w2.finish().ok());
    CHECK(ExpertStore::open(dir).ok());
  }
  auto st = ExpertStore::open(dir);
  if (!fs::exists(dir)) {
    REQUIRE_FALSE(st.ok());
    CHECK_THAT(st.error(), Catch::Contains("does not exist"));
  }
}

TEST_CASE("store: writer errors", "[store]") {
  TempDir t;
  const fs::path dir = t / "store";

  SECTION("bad header") {
    auto h = header(4096);
    h.blob_bytes = 5000;
    auto w = ExpertStoreWriter::create(dir, h, false);
    REQUIRE_FALSE(w.ok());
    CHECK_THAT(w.error(), Catch::Contains("blob_bytes") && Catch::Contains("4096"));
    h.blob_bytes = 0;
    CHECK_FALSE(ExpertStoreWriter::create(dir, h, false).ok());
    h = header(4096);
    h.config_json = "[1,2]";
    w = ExpertStoreWriter::create(dir, h, false);
    REQUIRE_FALSE(w.ok());
    CHECK_THAT(w.error(), Catch::Contains("config_json"));
    h.config_json = "{not json";
    CHECK_FALSE(ExpertStoreWriter::create(dir, h, false).ok());
    h = header(4096);
    h.hidden = 0;
    CHECK_FALSE(ExpertStoreWriter::create(dir, h, false).ok());
    h = header(4096);
    h.expert_quant = "";
    CHECK_FALSE(ExpertStoreWriter::create(dir, h, false).ok());
    h = header(4096);
    h.dense_file = "../escape.safetensors";
    CHECK_FALSE(ExpertStoreWriter::create(dir, h, false).ok());
    CHECK_FALSE(ExpertStoreWriter::create("", header(4096), false).ok());
    CHECK_FALSE(fs::exists(t / "store.partial"));
  }
  SECTION("bad blobs") {
    auto w = ExpertStoreWriter::create(dir, header(4096), false);
    REQUIRE(w.ok());
    Bytes b = random_bytes(8192, 1);
    auto s = w->add_blob(1, 2, b.data(), 8192);
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("layer 1 expert 2") && Catch::Contains("8192"));
    REQUIRE(w->add_blob(1, 2, b.data(), 4096).ok());
    s = w->add_blob(1, 2, b.data(), 4096);
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("layer 1 expert 2") && Catch::Contains("already"));
    CHECK_FALSE(w->add_blob(-1, 0, b.data(), 4096).ok());
    CHECK_FALSE(w->add_blob(1, 3, nullptr, 4096).ok());
    // Dense tensors whose size does not match their dtype and shape, twice, or of no dense dtype.
    s = w->add_dense("t", DType::F32, {5}, b.data(), 16);
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("'t'") && Catch::Contains("20"));
    REQUIRE(w->add_dense("t", DType::F32, {5}, b.data(), 20).ok());
    CHECK_THAT(w->add_dense("t", DType::F32, {5}, b.data(), 20).error(), Catch::Contains("already"));
    CHECK_FALSE(w->add_dense("i", DType::I32, {5}, b.data(), 20).ok());
    CHECK_THAT(w->add_dense("p", DType::Q8_PACKED, {16, 40}, b.data(), 4096).error(), Catch::Contains("group"));
    CHECK_FALSE(w->add_dense("v", DType::Q4_PACKED, {64}, b.data(), 32).ok());
    // A second finish() is refused.
    REQUIRE(w->finish().ok());
    CHECK_FALSE(w->finish().ok());
    CHECK_FALSE(w->add_blob(1, 4, b.data(), 4096).ok());
    CHECK(ExpertStore::open(dir).ok());
  }
}

TEST_CASE("store: open refuses missing, truncated and foreign stores with one clear error", "[store]") {
  TempDir t;
  const fs::path dir = t / "store";
  write_store(dir, {5, 7}, 16, 8192);
  REQUIRE(ExpertStore::open(dir).ok());

  SECTION("truncated blob file") {
    fs::resize_file(dir / "experts-L007.bin", 12 * 8192 + 100);
    auto st = ExpertStore::open(dir);
    REQUIRE_FALSE(st.ok());
    // The first blob that does not fit is expert 12 (the file holds experts in file order,
    // which is the shuffled order they were added in) — find which one it is.
    CHECK_THAT(st.error(), Catch::Contains("experts-L007.bin is truncated: layer 7 expert "));
    CHECK_THAT(st.error(), Catch::Contains("but the file has 98404 bytes; re-run moetier convert"));
    CHECK_THAT(st.error(), Catch::Contains("needs bytes ["));
  }
  SECTION("exact message for a truncated blob") {
    // Rewrite with experts in order, so that expert 12 sits at 12 * 8192.
    fs::remove_all(dir);
    auto w = ExpertStoreWriter::create(dir, header(8192), false);
    REQUIRE(w.ok());
    Bytes b = random_bytes(8192, 1);
    for (int e = 0; e < 16; ++e) REQUIRE(w->add_blob(7, e, b.data(), b.size()).ok());
    REQUIRE(w->finish().ok());
    fs::resize_file(dir / "experts-L007.bin", 12 * 8192 + 4096);
    auto st = ExpertStore::open(dir);
    REQUIRE_FALSE(st.ok());
    CHECK_THAT(st.error(), Catch::EndsWith("experts-L007.bin is truncated: layer 7 expert 12 needs bytes [98304, "
                                           "106496) but the file has 102400 bytes; re-run moetier convert"));
  }
  SECTION("missing blob file") {
    fs::remove(dir / "experts-L005.bin");
    auto st = ExpertStore::open(dir);
    REQUIRE_FALSE(st.ok());
    CHECK_THAT(st.error(), Catch::Contains("experts-L005.bin is missing") && Catch::Contains("layer 5 expert"));
  }
  SECTION("missing dense file") {
    fs::remove(dir / "dense.bin");
    auto st = ExpertStore::open(dir);
    REQUIRE_FALSE(st.ok());
    CHECK_THAT(st.error(), Catch::Contains("dense.bin is missing"));
  }
  SECTION("truncated dense file") {
    fs::resize_file(dir / "dense.bin", 4096 + 100);
    auto st = ExpertStore::open(dir);
    REQUIRE_FALSE(st.ok());
    CHECK_THAT(st.error(), Catch::Contains("dense.bin is truncated: tensor 'proj.weight' needs bytes [4096, ") &&
                               Catch::Contains("re-run moetier convert"));
  }
  SECTION("no manifest") {
    fs::remove(dir / "manifest.json");
    CHECK_FALSE(ExpertStore::looks_like_store(dir));
    auto st = ExpertStore::open(dir);
    REQUIRE_FALSE(st.ok());
    CHECK_THAT(st.error(), Catch::Contains("no manifest.json"));
  }
  SECTION("corrupt manifest") {
    write_file(dir / "manifest.json", "{\"format\": \"moetier-expert-store\", \"version\": ");
    auto st = ExpertStore::open(dir);
    REQUIRE_FALSE(st.ok());
    CHECK_THAT(st.error(), Catch::Contains("manifest.json") && Catch::Contains("not valid JSON"));
  }
  SECTION("no directory, with the trace of an interrupted conversion") {
    fs::rename(dir, t / "gone.partial");
    auto st = ExpertStore::open(t / "gone");
    REQUIRE_FALSE(st.ok());
    CHECK_THAT(st.error(), Catch::Contains("gone.partial") && Catch::Contains("re-run moetier convert"));
  }
  SECTION("a trailing slash names the same store") {
    CHECK(ExpertStore::open(dir.string() + "/").ok());
  }
}

TEST_CASE("store: version 3 holds whether GGUF experts are row tiles; version 2 stores read as blocks", "[store]") {
  ojson j = valid_manifest();
  j["experts"]["quant"] = "gguf";
  j["experts"]["group"] = 0;
  j["experts"]["ggml_types"] = ojson::array({ojson::array({1, 12, 12, 14}), ojson::array({2, 8, 8, 8})});
  {  // version 2 (before tiles): blocks
    auto m = parse_manifest(j.dump(), "v2");
    INFO((m ? "" : m.error()));
    REQUIRE(m);
    CHECK(m->version == 2);
    CHECK_FALSE(m->expert_ggml_tiles);
  }
  j["version"] = 3;
  j["experts"]["ggml_tiles"] = true;
  auto m = parse_manifest(j.dump(), "v3");
  INFO((m ? "" : m.error()));
  REQUIRE(m);
  CHECK(m->expert_ggml_tiles);
  CHECK(m->expert_ggml_types.at(1) == std::array<uint32_t, 3>{12, 12, 14});
  // Written back (always as the current version) and read again: the flag survives.
  auto text = manifest_to_json(*m);
  REQUIRE(text);
  CHECK(text->find("\"ggml_tiles\":true") != std::string::npos);
  auto again = parse_manifest(*text, "again");
  INFO((again ? "" : again.error()));
  REQUIRE(again);
  CHECK(again->version == kStoreFormatVersion);
  CHECK(again->expert_ggml_tiles);
  m->expert_ggml_tiles = false;
  text = manifest_to_json(*m);
  REQUIRE(text);
  CHECK(text->find("ggml_tiles") == std::string::npos);

  // A dense GGUF matrix as row tiles: its bytes are the tiles' (Q4_K: 2368 a tile block against
  // 16 x 144 = 2304 for the blocks), and the flag survives the round trip.
  ojson d = valid_manifest();
  d["version"] = 3;
  d["dense"]["tensors"][0] = {{"name", "a"}, {"dtype", "GGUF"}, {"ggml_type", 12}, {"ggml_tiles", true},
                              {"shape", {16, 256}}, {"offset", 0}, {"bytes", 2368}, {"crc32c", 7}};
  auto dm = parse_manifest(d.dump(), "dense-tiles");
  INFO((dm ? "" : dm.error()));
  REQUIRE(dm);
  CHECK(dm->dense[0].ggml_tiles);
  auto dtext = manifest_to_json(*dm);
  REQUIRE(dtext);
  auto dm2 = parse_manifest(*dtext, "again");
  REQUIRE(dm2);
  CHECK(dm2->dense[0].ggml_tiles);
  CHECK_FALSE(dm2->dense[1].ggml_tiles);
  const auto refused = [&](const std::function<void(ojson&)>& edit, const std::string& needle) {
    ojson j = d;
    edit(j);
    const std::string err = parse_error(j);
    INFO(err);
    CHECK(err.find(needle) != std::string::npos);
    CHECK(err.find("('a')") != std::string::npos);
  };
  refused([](ojson& j) { j["dense"]["tensors"][0]["bytes"] = 16 * 144; }, "2304 bytes, but its dtype and shape need 2368");
  refused([](ojson& j) { j["version"] = 2; }, "\"ggml_tiles\" needs store format version 3 (this store says 2)");
  refused([](ojson& j) { j["dense"]["tensors"][0]["ggml_tiles"] = "yes"; }, "\"ggml_tiles\" must be true or false");
  refused([](ojson& j) { j["dense"]["tensors"][0]["shape"] = {24, 256}; }, "rows a multiple of 16, not Q4_K with 24 rows");
  refused([](ojson& j) { j["dense"]["tensors"][0]["ggml_type"] = 2; }, "not Q4_0");
  refused([](ojson& j) {
    j["dense"]["tensors"][0] = {{"name", "a"}, {"dtype", "BF16"}, {"ggml_tiles", true}, {"shape", {3, 5}}, {"offset", 0},
                                {"bytes", 30}, {"crc32c", 7}};
  }, "only GGUF blocks are held as row tiles");
}

TEST_CASE("store: every manifest problem is one error naming the field, layer and expert", "[store]") {
  REQUIRE(parse_error(valid_manifest()).empty());
  struct Case {
    const char* name;
    std::function<void(ojson&)> edit;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {"not an object", [](ojson& j) { j = ojson::array(); }, {"must be a JSON object"}},
      {"format", [](ojson& j) { j["format"] = "safetensors"; }, {"not a moetier expert store"}},
      {"newer version", [](ojson& j) { j["version"] = 4; }, {"version 4 is newer", "upgrade moetier"}},
      {"version 1", [](ojson& j) { j["version"] = 1; }, {"format version 1", "re-run moetier convert"}},
      {"no dense", [](ojson& j) { j.erase("dense"); }, {"missing \"dense\""}},
      {"dense quant", [](ojson& j) { j["dense"]["quant"] = ""; }, {"dense quantisation"}},
      {"dense group", [](ojson& j) { j["dense"]["group"] = 12; }, {"dense \"group\" is 12"}},
      {"dense dtype", [](ojson& j) { j["dense"]["tensors"][0]["dtype"] = "I32"; }, {"('a')", "unknown dtype \"I32\""}},
      {"dense shape", [](ojson& j) { j["dense"]["tensors"][0]["shape"] = {3, 0}; }, {"('a')", "out of range"}},
      {"dense shape 3d", [](ojson& j) { j["dense"]["tensors"][0]["shape"] = {1, 3, 5}; }, {"('a')", "1 or 2"}},
      {"dense bytes", [](ojson& j) { j["dense"]["tensors"][0]["bytes"] = 31; }, {"('a')", "need 30"}},
      {"dense packed cols", [](ojson& j) { j["dense"]["tensors"][1]["shape"] = {20, 48}; }, {"('b')", "group 32"}},
      {"dense offset", [](ojson& j) { j["dense"]["tensors"][1]["offset"] = 100; }, {"('b')", "multiple of 4096"}},
      {"dense overlap", [](ojson& j) { j["dense"]["tensors"][1]["offset"] = 0; }, {"'a' and 'b' overlap"}},
      {"dense twice", [](ojson& j) { j["dense"]["tensors"][1]["name"] = "a"; }, {"'a' is listed twice"}},
      {"dense crc", [](ojson& j) { j["dense"]["tensors"][1].erase("crc32c"); }, {"('b')", "missing field 'crc32c'"}},
      {"old version", [](ojson& j) { j["version"] = 0; }, {"unsupported store format version 0", "versions 2 to 3"}},
      {"ggml_tiles on q4", [](ojson& j) { j["version"] = 3; j["experts"]["ggml_tiles"] = true; },
       {"\"ggml_tiles\" is only for \"gguf\" experts, not \"q4\""}},
      {"ggml_tiles type", [](ojson& j) { j["version"] = 3; j["experts"]["ggml_tiles"] = 1; }, {"\"ggml_tiles\" must be true or false"}},
      {"ggml_tiles in version 2", [](ojson& j) { j["experts"]["ggml_tiles"] = false; },
       {"\"ggml_tiles\" needs store format version 3 (this store says 2)"}},
      {"version type", [](ojson& j) { j["version"] = "1"; }, {"field 'version' is \"1\"; it must be an integer"}},
      {"no config", [](ojson& j) { j.erase("config"); }, {"missing \"config\""}},
      {"config type", [](ojson& j) { j["config"] = "x"; }, {"\"config\" must be an object"}},
      {"blob_bytes unaligned", [](ojson& j) { j["experts"]["blob_bytes"] = 4000; }, {"blob_bytes", "multiple of 4096"}},
      {"blob_bytes zero", [](ojson& j) { j["experts"]["blob_bytes"] = 0; }, {"\"blob_bytes\" is 0"}},
      {"blob_bytes negative", [](ojson& j) { j["experts"]["blob_bytes"] = -4096; }, {"'blob_bytes' is -4096", "integer in [0,"}},
      {"blob_bytes float", [](ojson& j) { j["experts"]["blob_bytes"] = 4096.5; }, {"blob_bytes", "integer"}},
      {"blob_bytes huge float", [](ojson& j) { j["experts"]["blob_bytes"] = 1e30; }, {"'blob_bytes' is 1e+30", "integer"}},
      {"quant type", [](ojson& j) { j["experts"]["quant"] = 4; }, {"field 'quant' is 4; it must be a string"}},
      {"hidden", [](ojson& j) { j["experts"]["hidden"] = 0; }, {"experts", "'hidden' is 0; it must be an integer in [1, 2147483647]"}},
      {"no dense_file", [](ojson& j) { j.erase("dense_file"); }, {"missing field 'dense_file'"}},
      {"dense_file path", [](ojson& j) { j["dense_file"] = "/etc/passwd"; }, {"not a plain file name"}},
      {"files type", [](ojson& j) { j["files"] = "experts-L001.bin"; }, {"\"files\" must be an array"}},
      {"file name", [](ojson& j) { j["files"][1] = "../x.bin"; }, {"files[1]", "not a plain file name"}},
      {"file twice", [](ojson& j) { j["files"][1] = "experts-L001.bin"; }, {"files[1]", "listed twice"}},
      {"file index", [](ojson& j) { j["blobs"][4]["file"] = 2; },
       {"blobs[4] (layer 2 expert 1)", "file index 2 is out of range"}},
      {"offset unaligned", [](ojson& j) { j["blobs"][5]["offset"] = 8000; },
       {"blobs[5] (layer 2 expert 2)", "experts-L002.bin", "offset 8000 is not a multiple of 4096"}},
      {"bytes", [](ojson& j) { j["blobs"][0]["bytes"] = 8192; }, {"layer 1 expert 0", "blob_bytes = 4096"}},
      {"duplicate", [](ojson& j) { j["blobs"][2]["expert"] = 1; }, {"layer 1 expert 1 is listed twice"}},
      {"overlap", [](ojson& j) { j["blobs"][2]["offset"] = 4096; }, {"overlap", "experts-L001.bin"}},
      {"negative layer", [](ojson& j) { j["blobs"][0]["layer"] = -1; }, {"blobs[0]", "'layer' is -1"}},
      {"huge expert", [](ojson& j) { j["blobs"][0]["expert"] = 4294967296ull; }, {"blobs[0]", "'expert' is 4294967296"}},
      {"crc range", [](ojson& j) { j["blobs"][1]["crc32c"] = 4294967296ull; }, {"layer 1 expert 1", "crc32c"}},
      {"missing crc", [](ojson& j) { j["blobs"][1].erase("crc32c"); }, {"layer 1 expert 1", "missing field 'crc32c'"}},
      {"blob type", [](ojson& j) { j["blobs"][1] = 7; }, {"blobs[1] must be an object"}},
      {"offset overflow", [](ojson& j) { j["blobs"][1]["offset"] = 18446744073709547520ull; },
       {"layer 1 expert 1", "out of range"}},
  };
  for (const auto& c : cases) {
    ojson j = valid_manifest();
    c.edit(j);
    const std::string err = parse_error(j);
    INFO(c.name << ": " << err);
    REQUIRE_FALSE(err.empty());
    CHECK_THAT(err, Catch::StartsWith("store/manifest.json: "));
    for (const auto& e : c.expect) CHECK_THAT(err, Catch::Contains(e));
  }
  // Pathological nesting is refused before it reaches recursive code.
  std::string deep = "{\"format\":\"moetier-expert-store\",\"config\":" + std::string(100000, '[') +
                     std::string(100000, ']') + "}";
  auto r = parse_manifest(deep, "deep.json");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Catch::Contains("deep.json") && Catch::Contains("nested too deeply"));
  CHECK_FALSE(parse_manifest("", "empty.json").ok());
}
