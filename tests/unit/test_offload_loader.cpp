// Tests for offload/blob_loader (io_uring and pread backends) and offload/disk_bandwidth:
// exact bytes back, corruption detection, fault injection (short reads, transient and
// persistent errors, EOF), bounded retries with clear messages, many concurrent loads each
// completing exactly once, and destruction with loads in flight.
#include <catch2/catch.hpp>

#include "tests/unit/temp_dir.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "offload/blob_loader.h"
#include "offload/disk_bandwidth.h"
#include "offload/expert_store.h"

namespace fs = std::filesystem;
using namespace mt::offload;
using Bytes = std::vector<uint8_t>;

namespace {

// Scratch directories: tests/unit/temp_dir.h.
struct TempDir : mt::test::TempDir {
  TempDir() : mt::test::TempDir("loader_test") {}
};

Bytes random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes v(n);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t x = rng();
    std::memcpy(v.data() + i, &x, 8);
  }
  return v;
}

using Key = std::pair<int32_t, int32_t>;

// A store with `experts` random blobs in each of `layers`.
struct TestStore {
  TempDir tmp;
  fs::path dir;
  std::map<Key, Bytes> blobs;
  std::vector<Key> keys;
  uint64_t blob_bytes = 0;

  TestStore(const std::vector<int32_t>& layers, int experts, uint64_t bb, uint64_t seed = 11) : blob_bytes(bb) {
    dir = tmp / "store";
    StoreManifest h;
    h.config_json = R"({"model_type":"deepseek_v3"})";
    h.expert_quant = "q8";
    h.group = 128;
    h.hidden = 64;
    h.inter = 64;
    h.blob_bytes = bb;
    auto w = ExpertStoreWriter::create(dir, h, false);
    REQUIRE(w.ok());
    std::ofstream(w->staging_dir() / "dense.safetensors") << "dense";
    for (int32_t l : layers)
      for (int32_t e = 0; e < experts; ++e) {
        Bytes b = random_bytes(bb, seed + static_cast<uint64_t>(l) * 7919u + static_cast<uint64_t>(e) * 104729u);
        REQUIRE(w->add_blob(l, e, b.data(), b.size()).ok());
        blobs[{l, e}] = std::move(b);
        keys.emplace_back(l, e);
      }
    auto s = w->finish();
    REQUIRE(s.ok());
  }

  ExpertStore open() const {
    auto st = ExpertStore::open(dir);
    INFO((st.ok() ? "" : st.error()));
    REQUIRE(st.ok());
    return std::move(st).value();
  }
};

std::unique_ptr<BlobLoader> make(const ExpertStore& st, const LoaderOptions& o) {
  auto l = make_blob_loader(st, o);
  INFO((l.ok() ? "" : l.error()));
  REQUIRE(l.ok());
  return std::move(l).value();
}

LoaderOptions uring_options() {
  LoaderOptions o;
  o.queue_depth = 8;
  return o;
}
LoaderOptions pread_options() {
  LoaderOptions o;
  o.queue_depth = 4;
  o.force_pread = true;
  return o;
}

bool same(const uint8_t* p, const Bytes& want) { return std::memcmp(p, want.data(), want.size()) == 0; }

// pread that returns -errno, for injected readers that pass through to the file.
int64_t real_pread(int fd, uint8_t* dst, uint64_t bytes, uint64_t offset) {
  const ssize_t r = ::pread(fd, dst, bytes, static_cast<off_t>(offset));
  return r < 0 ? -static_cast<int64_t>(errno) : static_cast<int64_t>(r);
}

// Waits for n callbacks.
class Latch {
 public:
  explicit Latch(int n) : n_(n) {}
  void count_down() {
    std::lock_guard<std::mutex> lk(mu_);
    if (--n_ == 0) cv_.notify_all();
  }
  bool wait_for(std::chrono::seconds s) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, s, [&] { return n_ <= 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
};

}  // namespace

TEST_CASE("loader: AlignedBuffer", "[loader]") {
  AlignedBuffer z;
  CHECK(z.data() == nullptr);
  CHECK(z.size() == 0);
  AlignedBuffer z2(0);
  CHECK(z2.data() == nullptr);
  AlignedBuffer a(10000);
  REQUIRE(a.data() != nullptr);
  CHECK(a.size() == 10000);
  CHECK(reinterpret_cast<uintptr_t>(a.data()) % 4096 == 0);
  std::memset(a.data(), 0xab, a.size());
  uint8_t* p = a.data();
  AlignedBuffer b(std::move(a));
  CHECK(b.data() == p);
  CHECK(a.data() == nullptr);
  CHECK(a.size() == 0);
  AlignedBuffer c(4096);
  c = std::move(b);
  CHECK(c.data() == p);
  CHECK(c.size() == 10000);
  c = AlignedBuffer();
  CHECK(c.data() == nullptr);
}

// The VmFlags of the mapping holding p, from /proc/self/smaps ("" where not found).
static std::string vm_flags_at(const void* p) {
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool inside = false;
  const auto a = reinterpret_cast<uintptr_t>(p);
  while (std::getline(f, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' ')) {
      inside = a >= lo && a < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

TEST_CASE("loader: AlignedBuffer asked for huge pages, from 2 MiB up, has them where the kernel does", "[loader]") {
  const size_t n = (size_t{3} << 20) + 4096;
  AlignedBuffer big(n, true);
  REQUIRE(big.data() != nullptr);
  CHECK(big.size() == n);
  CHECK(reinterpret_cast<uintptr_t>(big.data()) % (size_t{2} << 20) == 0);
  std::memset(big.data(), 0x5a, n);
  CHECK(big.data()[n - 1] == 0x5a);
  AlignedBuffer small(size_t{1} << 20, true), plain(n);
  CHECK(reinterpret_cast<uintptr_t>(small.data()) % 4096 == 0);
  CHECK(reinterpret_cast<uintptr_t>(plain.data()) % 4096 == 0);
  // MADV_HUGEPAGE marks the mapping "hg" (a kernel built without THP refuses the advice and has
  // no /sys/kernel/mm/transparent_hugepage; a sandboxed /proc may show no VmFlags).
  const std::string flags = vm_flags_at(big.data());
  if (std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").good() && !flags.empty()) {
    INFO(flags);
    CHECK(flags.find(" hg") != std::string::npos);
    CHECK(vm_flags_at(small.data()).find(" hg") == std::string::npos);
    CHECK(vm_flags_at(plain.data()).find(" hg") == std::string::npos);
  }
}

TEST_CASE("loader: exact bytes back through both backends", "[loader]") {
  TestStore ts({0, 3, 7}, 5, 64 * 1024);
  const ExpertStore st = ts.open();
  struct Variant {
    const char* name;
    LoaderOptions opt;
  };
  std::vector<Variant> variants;
  variants.push_back({"io_uring", uring_options()});
  variants.push_back({"pread", pread_options()});
  {
    LoaderOptions o = uring_options();
    o.chunk_bytes = 4096;  // 16 chunks per blob through a queue of 8: the pending queue works
    o.queue_depth = 3;
    variants.push_back({"io_uring small chunks", o});
    o.force_pread = true;
    variants.push_back({"pread small chunks", o});
  }
  {
    LoaderOptions o = uring_options();
    o.direct_io = false;
    variants.push_back({"io_uring buffered", o});
  }
  for (const auto& v : variants) {
    INFO(v.name);
    auto loader = make(st, v.opt);
    if (std::string(v.name).rfind("io_uring", 0) == 0 && std::string(loader->backend()) != "io_uring")
      WARN("io_uring is unavailable here; the io_uring variant ran on " << loader->backend());
    if (v.opt.force_pread) CHECK(std::string(loader->backend()) == "pread");
    AlignedBuffer buf(ts.blob_bytes);
    for (const auto& [key, want] : ts.blobs) {
      std::memset(buf.data(), 0, buf.size());
      auto s = loader->load(key.first, key.second, buf.data());
      INFO("layer " << key.first << " expert " << key.second << ": " << (s.ok() ? "" : s.error()));
      REQUIRE(s.ok());
      REQUIRE(same(buf.data(), want));
    }
    const LoaderStats stats = loader->stats();
    CHECK(stats.loads == ts.blobs.size());
    CHECK(stats.loads_failed == 0);
    CHECK(stats.bytes_read == ts.blobs.size() * ts.blob_bytes);
    CHECK(stats.checksums_verified == ts.blobs.size());
    // A second load of each is not verified again.
    REQUIRE(loader->load(0, 0, buf.data()).ok());
    CHECK(loader->stats().checksums_verified == ts.blobs.size());
  }
}

TEST_CASE("loader: io_uring is the default backend where the kernel has it", "[loader]") {
  TestStore ts({1}, 1, 4096);
  const ExpertStore st = ts.open();
  auto loader = make(st, LoaderOptions{});
  if (std::string(loader->backend()) != "io_uring") WARN("io_uring unavailable: running on " << loader->backend());
  AlignedBuffer buf(4096);
  REQUIRE(loader->load(1, 0, buf.data()).ok());
  CHECK(same(buf.data(), ts.blobs.at({1, 0})));
}

TEST_CASE("loader: a flipped byte is detected and named", "[loader]") {
  TestStore ts({2, 7}, 16, 16 * 1024);
  const ExpertStore st = ts.open();
  const BlobInfo* b = st.find(7, 12);
  REQUIRE(b != nullptr);
  {
    const fs::path f = st.file_path(b->file);
    const int fd = ::open(f.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    uint8_t c = 0;
    REQUIRE(::pread(fd, &c, 1, static_cast<off_t>(b->offset + 5000)) == 1);
    c ^= 0x10;
    REQUIRE(::pwrite(fd, &c, 1, static_cast<off_t>(b->offset + 5000)) == 1);
    ::close(fd);
  }
  for (bool force_pread : {false, true}) {
    INFO((force_pread ? "pread" : "io_uring"));
    LoaderOptions o = force_pread ? pread_options() : uring_options();
    auto loader = make(st, o);
    AlignedBuffer buf(ts.blob_bytes);
    auto s = loader->load(7, 12, buf.data());
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::StartsWith("layer 7 expert 12 in "));
    CHECK_THAT(s.error(), Catch::Contains("experts-L007.bin at offset " + std::to_string(b->offset) + " is corrupt"));
    char want[32];
    std::snprintf(want, sizeof want, "expected 0x%08x", b->crc);
    CHECK_THAT(s.error(), Catch::Contains(want) && Catch::EndsWith("re-run moetier convert"));
    // Still refused the second time (a corrupt blob is never marked verified).
    CHECK_FALSE(loader->load(7, 12, buf.data()).ok());
    // Its neighbours are fine.
    REQUIRE(loader->load(7, 11, buf.data()).ok());
    CHECK(same(buf.data(), ts.blobs.at({7, 11})));
    CHECK(loader->stats().loads_failed == 2);

    // Without verification the (corrupt) bytes come back.
    o.verify_checksums = false;
    auto unchecked = make(st, o);
    CHECK(unchecked->load(7, 12, buf.data()).ok());
    CHECK(buf.data()[5000] == (ts.blobs.at({7, 12})[5000] ^ 0x10));
  }
}

TEST_CASE("loader: caller errors come back through the callback", "[loader]") {
  TestStore ts({4}, 2, 4096);
  const ExpertStore st = ts.open();
  for (bool force_pread : {false, true}) {
    INFO((force_pread ? "pread" : "io_uring"));
    auto loader = make(st, force_pread ? pread_options() : uring_options());
    AlignedBuffer buf(8192);
    auto s = loader->load(4, 9, buf.data());
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("layer 4 expert 9 is not in the expert store"));
    s = loader->load(5, 0, buf.data());
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("layer 5 expert 0"));
    s = loader->load(4, 1, buf.data() + 8);
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("layer 4 expert 1") && Catch::Contains("aligned"));
    s = loader->load(4, 1, nullptr);
    REQUIRE_FALSE(s.ok());
    // The callback runs off the caller's thread, so a caller may hold its own lock.
    std::mutex m;
    std::thread::id cb_thread;
    bool cb_ok = true;
    Latch latch(1);
    {
      std::lock_guard<std::mutex> lk(m);
      loader->load_async(4, 99, buf.data(), [&](mt::Status st2) {
        std::lock_guard<std::mutex> lk2(m);
        cb_ok = st2.ok();
        cb_thread = std::this_thread::get_id();
        latch.count_down();
      });
    }
    REQUIRE(latch.wait_for(std::chrono::seconds(10)));
    std::lock_guard<std::mutex> lk(m);
    CHECK_FALSE(cb_ok);
    CHECK(cb_thread != std::this_thread::get_id());
  }
}

TEST_CASE("loader: options and files are checked at creation", "[loader]") {
  TestStore ts({4}, 2, 4096);
  const ExpertStore st = ts.open();
  LoaderOptions o;
  o.queue_depth = 0;
  CHECK_FALSE(make_blob_loader(st, o).ok());
  o = LoaderOptions{};
  o.max_retries = -1;
  CHECK_FALSE(make_blob_loader(st, o).ok());
  o = LoaderOptions{};
  o.chunk_bytes = 1000;
  CHECK_FALSE(make_blob_loader(st, o).ok());
  // A blob file that disappears after open() is named.
  fs::remove(ts.dir / "experts-L004.bin");
  auto l = make_blob_loader(st, LoaderOptions{});
  REQUIRE_FALSE(l.ok());
  CHECK_THAT(l.error(), Catch::Contains("experts-L004.bin") && Catch::Contains("No such file"));
}

TEST_CASE("loader: fault injection", "[loader][faults]") {
  TestStore ts({2, 7}, 4, 32 * 1024);
  const ExpertStore st = ts.open();
  AlignedBuffer buf(ts.blob_bytes);

  SECTION("every read returns half of what was asked") {
    for (uint64_t chunk : {uint64_t{1} << 20, uint64_t{8192}}) {
      LoaderOptions o;
      o.queue_depth = 4;
      o.chunk_bytes = chunk;
      std::atomic<uint64_t> calls{0};
      o.inject = [&](int fd, uint8_t* dst, uint64_t bytes, uint64_t off) {
        ++calls;
        return real_pread(fd, dst, std::max<uint64_t>(1, bytes / 2), off);
      };
      auto loader = make(st, o);
      CHECK(std::string(loader->backend()) == "pread");
      for (const auto& [key, want] : ts.blobs) {
        std::memset(buf.data(), 0, buf.size());
        auto s = loader->load(key.first, key.second, buf.data());
        INFO((s.ok() ? "" : s.error()));
        REQUIRE(s.ok());
        REQUIRE(same(buf.data(), want));
      }
      CHECK(loader->stats().short_reads > 0);
      CHECK(loader->stats().retries == 0);
      CHECK(calls.load() > ts.blobs.size());
    }
  }

  SECTION("transient EIO / EAGAIN / ECANCELED / EINTR succeed after retries") {
    LoaderOptions o;
    o.queue_depth = 4;
    o.chunk_bytes = 8192;
    o.max_retries = 4;
    std::mutex mu;
    std::map<std::pair<int, uint64_t>, int> failures;  // by (file, offset): fail the first four reads
    const int codes[] = {EIO, EAGAIN, ECANCELED, EINTR};
    o.inject = [&](int fd, uint8_t* dst, uint64_t bytes, uint64_t off) -> int64_t {
      {
        std::lock_guard<std::mutex> lk(mu);
        int& n = failures[{fd, off}];
        if (n < 4) return -codes[n++];
      }
      return real_pread(fd, dst, bytes, off);
    };
    auto loader = make(st, o);
    for (const auto& [key, want] : ts.blobs) {
      auto s = loader->load(key.first, key.second, buf.data());
      INFO((s.ok() ? "" : s.error()));
      REQUIRE(s.ok());
      REQUIRE(same(buf.data(), want));
    }
    CHECK(loader->stats().retries == 4 * ts.blobs.size() * (ts.blob_bytes / 8192));
  }

  SECTION("persistent EIO fails with a clear message, in bounded time") {
    LoaderOptions o;
    o.queue_depth = 2;
    o.max_retries = 4;
    std::atomic<int> calls{0};
    o.inject = [&](int, uint8_t*, uint64_t, uint64_t) -> int64_t {
      ++calls;
      return -EIO;
    };
    auto loader = make(st, o);
    const BlobInfo* b = st.find(7, 2);
    const auto t0 = std::chrono::steady_clock::now();
    auto s = loader->load(7, 2, buf.data());
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::StartsWith("reading layer 7 expert 2 from "));
    CHECK_THAT(s.error(), Catch::EndsWith("experts-L007.bin at offset " + std::to_string(b->offset) +
                                          ": Input/output error (after 4 retries)"));
    CHECK(calls.load() == 5);
    CHECK(secs < 2.0);
    CHECK(loader->stats().loads_failed == 1);
  }

  SECTION("persistent errors with a blob in several chunks: one callback, one error") {
    LoaderOptions o;
    o.queue_depth = 4;
    o.chunk_bytes = 4096;
    o.max_retries = 2;
    std::atomic<int> calls{0};
    o.inject = [&](int, uint8_t*, uint64_t, uint64_t) -> int64_t {
      ++calls;
      return -EAGAIN;
    };
    auto loader = make(st, o);
    std::atomic<int> callbacks{0};
    Latch latch(1);
    std::string err;
    loader->load_async(2, 3, buf.data(), [&](mt::Status s) {
      ++callbacks;
      err = s.ok() ? "" : s.error();
      latch.count_down();
    });
    REQUIRE(latch.wait_for(std::chrono::seconds(10)));
    loader.reset();
    CHECK(callbacks.load() == 1);
    CHECK_THAT(err, Catch::Contains("layer 2 expert 3") && Catch::Contains("(after 2 retries)"));
    CHECK(calls.load() == 3 * 8);
  }

  SECTION("max_retries = 0 fails at once; a hard error is not retried") {
    LoaderOptions o;
    o.queue_depth = 1;
    o.max_retries = 0;
    std::atomic<int> calls{0};
    o.inject = [&](int, uint8_t*, uint64_t, uint64_t) -> int64_t {
      ++calls;
      return -ECANCELED;
    };
    auto loader = make(st, o);
    auto s = loader->load(2, 0, buf.data());
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("(after 0 retries)"));
    CHECK(calls.load() == 1);

    o.max_retries = 4;
    calls = 0;
    o.inject = [&](int, uint8_t*, uint64_t, uint64_t) -> int64_t {
      ++calls;
      return -ENOSPC;
    };
    loader = make(st, o);
    s = loader->load(2, 0, buf.data());
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("layer 2 expert 0") && Catch::EndsWith(std::strerror(ENOSPC)));
    CHECK(calls.load() == 1);
  }

  SECTION("end of file, too many bytes, a throwing reader") {
    LoaderOptions o;
    o.queue_depth = 1;
    o.max_retries = 3;
    o.inject = [&](int, uint8_t*, uint64_t, uint64_t) -> int64_t { return 0; };
    auto loader = make(st, o);
    auto s = loader->load(2, 1, buf.data());
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("layer 2 expert 1") && Catch::Contains("unexpected end of file") &&
                              Catch::Contains("(after 3 retries)"));

    o.inject = [&](int, uint8_t*, uint64_t bytes, uint64_t) -> int64_t { return static_cast<int64_t>(bytes) + 1; };
    loader = make(st, o);
    s = loader->load(2, 1, buf.data());
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("more than"));

    o.inject = [&](int, uint8_t*, uint64_t, uint64_t) -> int64_t { throw std::runtime_error("boom"); };
    loader = make(st, o);
    s = loader->load(2, 1, buf.data());
    REQUIRE_FALSE(s.ok());
    CHECK_THAT(s.error(), Catch::Contains("Input/output error"));
  }

  SECTION("a scripted mix per read: short, EAGAIN, short, EIO, then the rest") {
    LoaderOptions o;
    o.queue_depth = 3;
    o.chunk_bytes = 16384;
    std::mutex mu;
    // By (file, where the chunk ends): continuations keep the end. A continuation of a short
    // read at an unaligned offset switches from the O_DIRECT to the buffered descriptor, so
    // key by the file's inode rather than the descriptor.
    std::map<std::pair<ino_t, uint64_t>, int> step;
    o.inject = [&](int fd, uint8_t* dst, uint64_t bytes, uint64_t off) -> int64_t {
      int n;
      {
        struct stat sb {};
        ::fstat(fd, &sb);
        std::lock_guard<std::mutex> lk(mu);
        n = step[{sb.st_ino, off + bytes}]++;
      }
      switch (n) {
        case 0: return real_pread(fd, dst, 4096, off);       // short
        case 1: return -EAGAIN;
        case 2: return real_pread(fd, dst, 100, off);        // short, unaligned
        case 3: return -EIO;
        default: return real_pread(fd, dst, bytes, off);
      }
    };
    auto loader = make(st, o);
    for (const auto& [key, want] : ts.blobs) {
      auto s = loader->load(key.first, key.second, buf.data());
      INFO((s.ok() ? "" : s.error()));
      REQUIRE(s.ok());
      REQUIRE(same(buf.data(), want));
    }
  }
}

TEST_CASE("loader: hundreds of concurrent loads from 4 threads complete exactly once", "[loader][concurrency]") {
  TestStore ts({1, 2, 3}, 8, 32 * 1024);
  const ExpertStore st = ts.open();
  for (int variant = 0; variant < 3; ++variant) {
    LoaderOptions o;
    const char* name = "io_uring";
    if (variant == 0) {
      o.queue_depth = 8;
      o.chunk_bytes = 8192;
    } else if (variant == 1) {
      name = "pread";
      o = pread_options();
      o.chunk_bytes = 8192;
    } else {
      name = "injected flaky pread";
      o.queue_depth = 6;
      std::atomic<uint64_t>* n = new std::atomic<uint64_t>(0);
      std::shared_ptr<std::atomic<uint64_t>> owner(n);
      o.inject = [owner](int fd, uint8_t* dst, uint64_t bytes, uint64_t off) -> int64_t {
        const uint64_t k = (*owner)++;
        if (k % 5 == 1) return -EAGAIN;
        if (k % 3 == 0 && bytes > 4096) bytes /= 2;
        return real_pread(fd, dst, bytes, off);
      };
    }
    INFO(name);
    constexpr int kThreads = 4, kPerThread = 100, kTotal = kThreads * kPerThread;
    std::vector<AlignedBuffer> bufs;
    for (int i = 0; i < kTotal; ++i) bufs.emplace_back(ts.blob_bytes);
    std::vector<Key> which(kTotal);
    std::vector<std::atomic<int>> hits(kTotal);
    std::vector<int> ok(kTotal, 0);
    Latch latch(kTotal);
    auto loader = make(st, o);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t) + 1);
        for (int i = 0; i < kPerThread; ++i) {
          const int id = t * kPerThread + i;
          which[id] = ts.keys[rng() % ts.keys.size()];
          loader->load_async(which[id].first, which[id].second, bufs[id].data(), [&, id](mt::Status s) {
            ok[id] = s.ok() ? 1 : 0;
            ++hits[id];
            latch.count_down();
          });
        }
      });
    }
    for (auto& th : threads) th.join();
    REQUIRE(latch.wait_for(std::chrono::seconds(60)));
    loader.reset();  // waits for anything left; no callback may run after this
    int errors = 0;
    for (int id = 0; id < kTotal; ++id) {
      REQUIRE(hits[id].load() == 1);
      if (!ok[id] || !same(bufs[id].data(), ts.blobs.at(which[id]))) ++errors;
    }
    CHECK(errors == 0);
  }
}

TEST_CASE("loader: destruction waits for loads in flight; callbacks may chain loads", "[loader][concurrency]") {
  TestStore ts({0, 1}, 8, 16 * 1024);
  const ExpertStore st = ts.open();
  for (bool force_pread : {false, true}) {
    INFO((force_pread ? "pread" : "io_uring"));
    LoaderOptions o = force_pread ? pread_options() : uring_options();
    o.chunk_bytes = 4096;
    std::atomic<int> callbacks{0}, failed{0};
    constexpr int kLoads = 200;
    std::vector<AlignedBuffer> bufs;
    for (int i = 0; i < kLoads; ++i) bufs.emplace_back(ts.blob_bytes);
    {
      auto loader = make(st, o);
      for (int i = 0; i < kLoads; ++i) {
        const Key k = ts.keys[static_cast<size_t>(i) % ts.keys.size()];
        loader->load_async(k.first, k.second, bufs[static_cast<size_t>(i)].data(),
                           [&callbacks, &failed](mt::Status s) {
                             if (!s.ok()) ++failed;
                             ++callbacks;
                           });
      }
    }  // destroyed with most loads still in flight
    CHECK(callbacks.load() == kLoads);
    CHECK(failed.load() == 0);
    for (int i = 0; i < kLoads; ++i)
      CHECK(same(bufs[static_cast<size_t>(i)].data(), ts.blobs.at(ts.keys[static_cast<size_t>(i) % ts.keys.size()])));

    // A callback that starts the next load (as a prefetcher would), from the completion thread.
    std::atomic<int> chained{0};
    failed = 0;
    {
      // `next` is declared first so that it outlives the loader, whose destructor waits for it.
      std::function<void(mt::Status)> next;
      auto loader = make(st, o);
      BlobLoader* lp = loader.get();
      next = [&](mt::Status s) {
        if (!s.ok()) ++failed;
        const int n = ++chained;
        if (n < 16) {
          const Key k = ts.keys[static_cast<size_t>(n)];
          lp->load_async(k.first, k.second, bufs[static_cast<size_t>(n)].data(), next);
        }
      };
      loader->load_async(0, 0, bufs[0].data(), next);
    }
    CHECK(chained.load() == 16);
    CHECK(failed.load() == 0);
  }
}

TEST_CASE("loader: synchronous loads from several threads at once", "[loader][concurrency]") {
  TestStore ts({5}, 16, 8192);
  const ExpertStore st = ts.open();
  auto loader = make(st, uring_options());
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      AlignedBuffer buf(ts.blob_bytes);
      for (int i = 0; i < 50; ++i) {
        const Key k = ts.keys[static_cast<size_t>(t * 50 + i) % ts.keys.size()];
        if (!loader->load(k.first, k.second, buf.data()).ok() || !same(buf.data(), ts.blobs.at(k))) ++bad;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(bad.load() == 0);
}

TEST_CASE("disk bandwidth: sequential io_uring reads of a file", "[loader][bandwidth]") {
  TempDir t;
  const fs::path f = t / "data.bin";
  {
    const Bytes b = random_bytes(4 << 20, 1);
    std::ofstream(f, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  auto r = measure_sequential_read_gbs(f, 256 * 1024, 4, 0.05);
  INFO((r.ok() ? "" : r.error()));
  REQUIRE(r.ok());
  CHECK(*r > 0.0);
  CHECK(*r < 1000.0);
  // The tail beyond whole blocks is skipped; a file smaller than one block is refused.
  CHECK(measure_sequential_read_gbs(f, 3 << 20, 2, 0.0).ok());
  auto small = measure_sequential_read_gbs(f, 8 << 20, 2, 0.0);
  REQUIRE_FALSE(small.ok());
  CHECK_THAT(small.error(), Catch::Contains("data.bin") && Catch::Contains("less than one block"));
  CHECK_FALSE(measure_sequential_read_gbs(f, 5000, 2, 0.0).ok());
  CHECK_FALSE(measure_sequential_read_gbs(f, 4096, 0, 0.0).ok());
  CHECK_FALSE(measure_sequential_read_gbs(t / "missing.bin", 4096, 1, 0.0).ok());
}

TEST_CASE("reads into registered buffers (io_uring fixed buffers) deliver the same bytes", "[offload][loader]") {
  TempDir dir;
  const uint64_t blob = 16384;
  StoreManifest h;
  h.config_json = "{}";
  h.expert_quant = "q4";
  h.group = 32;
  h.hidden = 64;
  h.inter = 96;
  h.blob_bytes = blob;
  const fs::path store_dir = dir / "store";
  std::vector<Bytes> blobs;
  {
    auto w = ExpertStoreWriter::create(store_dir, h, false);
    REQUIRE(w.ok());
    std::ofstream(w->staging_dir() / h.dense_file) << "x";
    for (int e = 0; e < 6; ++e) {
      blobs.push_back(random_bytes(blob, 100 + e));
      REQUIRE(w->add_blob(0, e, blobs.back().data(), blob).ok());
    }
    REQUIRE(w->finish().ok());
  }
  auto store = ExpertStore::open(store_dir);
  REQUIRE(store.ok());
  LoaderOptions lo;
  lo.chunk_bytes = 4096;  // several reads per blob, each must hit the registered region
  auto loader = make_blob_loader(*store, lo);
  REQUIRE(loader.ok());
  AlignedBuffer pool(6 * blob);
  const bool registered = (*loader)->register_buffers({{pool.data(), pool.size()}});
  for (int e = 0; e < 6; ++e) REQUIRE((*loader)->load(0, e, pool.data() + e * blob).ok());
  for (int e = 0; e < 6; ++e) CHECK(std::equal(blobs[e].begin(), blobs[e].end(), pool.data() + e * blob));
  const auto st = (*loader)->stats();
  if (std::string((*loader)->backend()) == "io_uring" && registered) {
    CHECK(st.fixed_reads == st.reads);
    CHECK(st.fixed_reads >= 6 * blob / 4096);
  } else {
    CHECK(st.fixed_reads == 0);
  }
  // A destination outside every registered region still works (plain read).
  AlignedBuffer other(blob);
  REQUIRE((*loader)->load(0, 3, other.data()).ok());
  CHECK(std::equal(blobs[3].begin(), blobs[3].end(), other.data()));
}
