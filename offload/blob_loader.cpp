// The asynchronous blob loader: an io_uring backend (O_DIRECT, registered files, a bounded
// number of reads in flight, a completion thread) and a pread thread-pool backend (the
// fallback, and the fault-injection path), sharing one set of retry and completion rules.
//
// A load is split into chunks of LoaderOptions::chunk_bytes; each chunk is one read that is
// continued after a short read and re-issued after EIO/EAGAIN/ECANCELED/EINTR (or no progress)
// up to max_retries times. When the last chunk of a load is done the blob's crc32c is checked
// (first successful load of each blob only) and the callback runs, on the completion thread
// (io_uring) or on a worker (pread). Errors the caller makes (unknown blob, unaligned buffer)
// are delivered the same way, never inline, so a caller may hold its own lock around
// load_async().
#include "offload/blob_loader.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace mt::offload {

namespace {

constexpr int kMaxQueueDepth = 4096;
constexpr int kMaxPreadThreads = 16;

std::string errno_text(int e) { return std::strerror(e); }

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string layer_expert(int32_t layer, int32_t expert) {
  return "layer " + std::to_string(layer) + " expert " + std::to_string(expert);
}

bool aligned(uint64_t v) { return v % kBlobAlign == 0; }

void note_buffered_once(const std::string& path, const char* why) {
  static std::atomic<bool> said{false};
  if (!said.exchange(true))
    std::fprintf(stderr, "moetier: note: %s: O_DIRECT %s; reading expert blobs through the page cache\n",
                 path.c_str(), why);
}

struct FileHandle {
  std::string path;
  int direct_fd = -1;    // O_DIRECT, or -1 where not wanted / not supported
  int buffered_fd = -1;  // always open
  int primary() const { return direct_fd >= 0 ? direct_fd : buffered_fd; }
};

struct Request;

// One read of part of a blob.
struct Chunk {
  Request* req = nullptr;
  uint64_t start = 0;  // offset within the blob
  uint64_t len = 0;
  uint64_t done = 0;   // bytes read so far
  int retries = 0;
  bool buffered = false;  // read through the buffered fd (O_DIRECT refused or unaligned resume)
  bool nop = false;       // carries an error decided at submission
};

struct Request {
  int32_t layer = 0, expert = 0;
  const BlobInfo* blob = nullptr;
  size_t blob_index = 0;
  uint8_t* dst = nullptr;
  LoadDone done;
  std::vector<Chunk> chunks;
  std::atomic<size_t> chunks_left{0};
  std::mutex err_mu;
  std::string error;  // the first error of any chunk
};

// Everything the two backends share: the store, file descriptors, retry rules, completion.
class Core {
 public:
  Core(const ExpertStore& store, const LoaderOptions& opt) : store_(store), opt_(opt) {
    const size_t n = store_.manifest().blobs.size();
    verified_.reset(new std::atomic<uint8_t>[n > 0 ? n : 1]());
    uint64_t cb = opt_.chunk_bytes;
    if (cb < kBlobAlign) cb = kBlobAlign;
    if (cb > (uint64_t{1} << 30)) cb = uint64_t{1} << 30;
    chunk_bytes_ = cb / kBlobAlign * kBlobAlign;
  }

  ~Core() {
    for (auto& f : files_) {
      if (f.direct_fd >= 0) ::close(f.direct_fd);
      if (f.buffered_fd >= 0) ::close(f.buffered_fd);
    }
  }

  Status open_files() {
    const auto& m = store_.manifest();
    files_.resize(m.files.size());
    for (size_t i = 0; i < m.files.size(); ++i) {
      FileHandle& f = files_[i];
      f.path = store_.file_path(static_cast<uint32_t>(i)).string();
      f.buffered_fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (f.buffered_fd < 0) return make_error("opening " + f.path + ": " + errno_text(errno));
      if (opt_.direct_io) {
        f.direct_fd = ::open(f.path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
        if (f.direct_fd < 0) {
          if (errno != EINVAL) return make_error("opening " + f.path + " with O_DIRECT: " + errno_text(errno));
          note_buffered_once(f.path, "is not supported by this filesystem");
        }
      }
    }
    return ok_status();
  }

  const std::vector<FileHandle>& files() const { return files_; }

  // A new request, or one that carries an error and a single no-op chunk.
  Request* make_request(int32_t layer, int32_t expert, uint8_t* dst, LoadDone done) {
    loads_.fetch_add(1, std::memory_order_relaxed);
    auto* r = new Request;
    r->layer = layer;
    r->expert = expert;
    r->dst = dst;
    r->done = std::move(done);
    const BlobInfo* b = store_.find(layer, expert);
    std::string err;
    if (!b) {
      err = layer_expert(layer, expert) + " is not in the expert store " + store_.dir().string();
    } else if (dst == nullptr) {
      err = "loading " + layer_expert(layer, expert) + ": no destination buffer";
    } else if (!aligned(reinterpret_cast<uintptr_t>(dst))) {
      err = "loading " + layer_expert(layer, expert) + ": the destination buffer is not " +
            std::to_string(kBlobAlign) + "-byte aligned (use AlignedBuffer)";
    }
    if (!err.empty()) {
      r->error = std::move(err);
      Chunk c;
      c.req = r;
      c.nop = true;
      r->chunks.push_back(c);
    } else {
      r->blob = b;
      r->blob_index = static_cast<size_t>(b - store_.manifest().blobs.data());
      for (uint64_t s = 0; s < b->bytes; s += chunk_bytes_) {
        Chunk c;
        c.req = r;
        c.start = s;
        c.len = std::min<uint64_t>(chunk_bytes_, b->bytes - s);
        r->chunks.push_back(c);
      }
    }
    r->chunks_left.store(r->chunks.size());
    {
      std::lock_guard<std::mutex> lk(out_mu_);
      ++outstanding_;
    }
    return r;
  }

  // Where the next read of a chunk goes.
  struct ReadTarget {
    const FileHandle* file;
    int fd;
    bool direct;
    uint8_t* dst;
    uint64_t bytes;
    uint64_t offset;
  };
  ReadTarget target(Chunk& c) const {
    const Request& r = *c.req;
    const FileHandle& f = files_[r.blob->file];
    ReadTarget t{&f, -1, false, r.dst + c.start + c.done, c.len - c.done, r.blob->offset + c.start + c.done};
    if (!c.buffered && f.direct_fd >= 0) {
      t.fd = f.direct_fd;
      t.direct = true;
    } else {
      t.fd = f.buffered_fd;
    }
    return t;
  }

  enum class Next { kDone, kAgain, kFail };

  // Applies the result of one read (bytes, or -errno) to its chunk.
  Next on_read(Chunk& c, int64_t res, std::string* err) {
    reads_.fetch_add(1, std::memory_order_relaxed);
    const Request& r = *c.req;
    const FileHandle& f = files_[r.blob->file];
    const uint64_t remaining = c.len - c.done;
    const uint64_t at = r.blob->offset + c.start + c.done;
    auto fail = [&](const std::string& what) {
      *err = "reading " + layer_expert(r.layer, r.expert) + " from " + f.path + " at offset " + std::to_string(at) +
             ": " + what;
      return Next::kFail;
    };
    if (res > 0) {
      if (static_cast<uint64_t>(res) > remaining)
        return fail("the read returned " + std::to_string(res) + " bytes, more than the " + std::to_string(remaining) +
                    " asked for");
      bytes_read_.fetch_add(static_cast<uint64_t>(res), std::memory_order_relaxed);
      c.done += static_cast<uint64_t>(res);
      if (c.done == c.len) return Next::kDone;
      short_reads_.fetch_add(1, std::memory_order_relaxed);
      // O_DIRECT needs the file offset, buffer and length aligned; continue buffered otherwise.
      // (blob offsets, chunk starts, lengths and dst are aligned, so c.done decides.)
      if (!c.buffered && f.direct_fd >= 0 && !aligned(c.done)) c.buffered = true;
      return Next::kAgain;
    }
    const int e = res == 0 ? 0 : static_cast<int>(-res);
    if (e == EINVAL && !c.buffered && f.direct_fd >= 0) {
      // The filesystem took O_DIRECT at open but refuses the read: continue through the cache.
      note_buffered_once(f.path, "reads are refused (EINVAL)");
      c.buffered = true;
      return Next::kAgain;
    }
    const bool transient = e == 0 || e == EIO || e == EAGAIN || e == ECANCELED || e == EINTR;
    const std::string what = e == 0 ? std::string("unexpected end of file (the file is shorter than the manifest says)")
                                    : errno_text(e);
    if (!transient) return fail(what);
    if (c.retries >= opt_.max_retries)
      return fail(what + " (after " + std::to_string(c.retries) + (c.retries == 1 ? " retry)" : " retries)"));
    ++c.retries;
    retries_.fetch_add(1, std::memory_order_relaxed);
    return Next::kAgain;
  }

  // A chunk is finished (ok when err is empty); the last one completes its request.
  void finish_chunk(Chunk& c, const std::string& err) {
    Request* r = c.req;
    if (!err.empty()) {
      std::lock_guard<std::mutex> lk(r->err_mu);
      if (r->error.empty()) r->error = err;
    }
    if (r->chunks_left.fetch_sub(1, std::memory_order_acq_rel) == 1) complete(r);
  }

  void complete(Request* r) {
    Status s = ok_status();
    if (!r->error.empty()) {
      s = make_error(r->error);
    } else if (opt_.verify_checksums && !verified_[r->blob_index].load(std::memory_order_acquire)) {
      const BlobInfo& b = *r->blob;
      const uint32_t got = crc32c(r->dst, b.bytes);
      if (got != b.crc) {
        s = make_error(layer_expert(r->layer, r->expert) + " in " + files_[b.file].path + " at offset " +
                       std::to_string(b.offset) + " is corrupt: crc32c " + hex32(got) + ", expected " + hex32(b.crc) +
                       "; re-run moetier convert");
      } else {
        verified_[r->blob_index].store(1, std::memory_order_release);
        verified_count_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (!s.ok()) failed_.fetch_add(1, std::memory_order_relaxed);
    LoadDone done = std::move(r->done);
    delete r;
    if (done) {
      try {
        done(std::move(s));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "moetier: warning: a blob-load callback threw: %s\n", e.what());
      } catch (...) {
        std::fprintf(stderr, "moetier: warning: a blob-load callback threw\n");
      }
    }
    done = nullptr;  // destroy captures before the loader may go away
    std::lock_guard<std::mutex> lk(out_mu_);
    if (--outstanding_ == 0) out_cv_.notify_all();
  }

  void wait_idle() {
    std::unique_lock<std::mutex> lk(out_mu_);
    out_cv_.wait(lk, [&] { return outstanding_ == 0; });
  }

  LoaderStats stats() const {
    LoaderStats s;
    s.loads = loads_.load();
    s.loads_failed = failed_.load();
    s.bytes_read = bytes_read_.load();
    s.reads = reads_.load();
    s.short_reads = short_reads_.load();
    s.retries = retries_.load();
    s.checksums_verified = verified_count_.load();
    return s;
  }

  const LoaderOptions& opt() const { return opt_; }

 private:
  ExpertStore store_;  // a copy: the loader does not depend on the caller's store object
  LoaderOptions opt_;
  uint64_t chunk_bytes_ = 1 << 20;
  std::vector<FileHandle> files_;
  std::unique_ptr<std::atomic<uint8_t>[]> verified_;

  std::mutex out_mu_;
  std::condition_variable out_cv_;
  uint64_t outstanding_ = 0;

  std::atomic<uint64_t> loads_{0}, failed_{0}, bytes_read_{0}, reads_{0}, short_reads_{0}, retries_{0},
      verified_count_{0};
};

// ---------------------------------------------------------------------------------------------
// pread backend: a pool of workers, each taking one chunk at a time and reading it to the end.

class PreadLoader final : public BlobLoader {
 public:
  PreadLoader(std::unique_ptr<Core> core, ReadFn read, int threads) : core_(std::move(core)), read_(std::move(read)) {
    if (!read_) {
      read_ = [](int fd, uint8_t* dst, uint64_t bytes, uint64_t offset) -> int64_t {
        const ssize_t r = ::pread(fd, dst, bytes, static_cast<off_t>(offset));
        return r < 0 ? -static_cast<int64_t>(errno) : static_cast<int64_t>(r);
      };
    }
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { run(); });
  }

  ~PreadLoader() override {
    core_->wait_idle();
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  void load_async(int32_t layer, int32_t expert, uint8_t* dst, LoadDone done) override {
    Request* r = core_->make_request(layer, expert, dst, std::move(done));
    const size_t n = r->chunks.size();  // r may be gone as soon as the lock is released
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (auto& c : r->chunks) q_.push_back(&c);
    }
    if (n == 1) cv_.notify_one();
    else cv_.notify_all();
  }

  const char* backend() const override { return "pread"; }
  LoaderStats stats() const override { return core_->stats(); }

 private:
  void run() {
    for (;;) {
      Chunk* c = nullptr;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
        if (q_.empty()) return;  // stop_ and nothing left
        c = q_.front();
        q_.pop_front();
      }
      process(*c);
    }
  }

  void process(Chunk& c) {
    std::string err;
    if (!c.nop) {
      for (;;) {
        const Core::ReadTarget t = core_->target(c);
        int64_t res;
        try {
          res = read_(t.fd, t.dst, t.bytes, t.offset);
        } catch (...) {
          res = -EIO;
        }
        const Core::Next n = core_->on_read(c, res, &err);
        if (n != Core::Next::kAgain) break;
      }
    }
    core_->finish_chunk(c, err);
  }

  std::unique_ptr<Core> core_;
  ReadFn read_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Chunk*> q_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// ---------------------------------------------------------------------------------------------
// io_uring backend: submissions from any thread under sq_mu_, at most depth_ reads in the
// kernel, the rest queued in pending_; one thread reaps completions, re-issues retries and
// continuations, and runs the callbacks.

class UringLoader final : public BlobLoader {
 public:
  // `ring` is initialised (init_ring) and owned from here on.
  UringLoader(std::unique_ptr<Core> core, std::unique_ptr<io_uring> ring, int depth)
      : core_(std::move(core)), ring_owner_(std::move(ring)), ring_(*ring_owner_), depth_(depth) {
    // Register the files (reads then skip the per-I/O file lookup); optional.
    std::vector<int> fds;
    for (const auto& f : core_->files()) fds.push_back(f.primary());
    if (!fds.empty() && io_uring_register_files(&ring_, fds.data(), static_cast<unsigned>(fds.size())) == 0)
      fixed_files_ = true;
    reaper_ = std::thread([this] { reap(); });
  }

  ~UringLoader() override {
    core_->wait_idle();
    {
      // Wake the reaper with a no-op whose user_data is null: its signal to stop.
      std::lock_guard<std::mutex> lk(sq_mu_);
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      while (!sqe) {
        submit_pending_sqes();
        sqe = io_uring_get_sqe(&ring_);
      }
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data(sqe, nullptr);
      submit_pending_sqes();
    }
    reaper_.join();
    io_uring_queue_exit(&ring_);
  }

  void load_async(int32_t layer, int32_t expert, uint8_t* dst, LoadDone done) override {
    Request* r = core_->make_request(layer, expert, dst, std::move(done));
    std::lock_guard<std::mutex> lk(sq_mu_);
    for (auto& c : r->chunks) pending_.push_back(&c);
    fill_locked();
  }

  const char* backend() const override { return "io_uring"; }
  LoaderStats stats() const override {
    LoaderStats st = core_->stats();
    st.fixed_reads = fixed_reads_.load();
    return st;
  }

  bool register_buffers(const std::vector<std::pair<uint8_t*, size_t>>& regions) override {
    std::lock_guard<std::mutex> lk(sq_mu_);
    if (!fixed_bufs_.empty() || regions.empty()) return false;  // once per loader
    std::vector<iovec> iov;
    for (const auto& [p, n] : regions) iov.push_back(iovec{p, n});
    const int r = io_uring_register_buffers(&ring_, iov.data(), static_cast<unsigned>(iov.size()));
    if (r < 0) {
      std::fprintf(stderr, "moetier: note: io_uring refused to register %zu expert buffers (%s); reading without them\n",
                   regions.size(), errno_text(-r).c_str());
      return false;
    }
    for (size_t i = 0; i < regions.size(); ++i)
      fixed_bufs_.push_back(FixedBuf{regions[i].first, regions[i].second, static_cast<int>(i)});
    std::sort(fixed_bufs_.begin(), fixed_bufs_.end(), [](const FixedBuf& a, const FixedBuf& b) { return a.base < b.base; });
    return true;
  }

 private:
  // Moves pending chunks into SQEs while fewer than depth_ are in the kernel; submits.
  void fill_locked() {
    while (inflight_ < depth_ && !pending_.empty()) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (!sqe) break;
      Chunk* c = pending_.front();
      pending_.pop_front();
      prep(sqe, *c);
      ++inflight_;
    }
    submit_pending_sqes();
  }

  // The registered buffer holding [dst, dst+len), or -1.
  int fixed_buffer(const uint8_t* dst, size_t len) const {
    auto it = std::upper_bound(fixed_bufs_.begin(), fixed_bufs_.end(), dst,
                               [](const uint8_t* p, const FixedBuf& b) { return p < b.base; });
    if (it == fixed_bufs_.begin()) return -1;
    --it;
    return dst + len <= it->base + it->bytes ? it->index : -1;
  }

  void prep(io_uring_sqe* sqe, Chunk& c) {
    if (c.nop) {
      io_uring_prep_nop(sqe);
    } else {
      const Core::ReadTarget t = core_->target(c);
      const auto len = static_cast<unsigned>(t.bytes);
      const bool use_fixed_file = fixed_files_ && (t.direct || t.file->direct_fd < 0);
      const int fd = use_fixed_file ? static_cast<int>(t.file - core_->files().data()) : t.fd;
      const int buf = fixed_buffer(t.dst, t.bytes);
      if (buf >= 0) {
        io_uring_prep_read_fixed(sqe, fd, t.dst, len, t.offset, buf);
        ++fixed_reads_;
      } else {
        io_uring_prep_read(sqe, fd, t.dst, len, t.offset);
      }
      if (use_fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
    }
    io_uring_sqe_set_data(sqe, &c);
  }

  // Hands the SQEs in the ring to the kernel. Called under sq_mu_.
  void submit_pending_sqes() {
    int backoff_us = 50;
    while (io_uring_sq_ready(&ring_) > 0) {
      const int r = io_uring_submit(&ring_);
      if (r >= 0 || r == -EINTR) continue;
      if (r == -EAGAIN || r == -EBUSY || r == -ENOMEM) {
        // The kernel is short of resources; the SQEs stay in the ring. Rare; wait a little.
        std::this_thread::sleep_for(std::chrono::microseconds(backoff_us));
        backoff_us = std::min(backoff_us * 2, 10000);
        continue;
      }
      std::fprintf(stderr, "moetier: error: io_uring_submit: %s\n", errno_text(-r).c_str());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  void reap() {
    std::vector<std::pair<Chunk*, int>> batch;
    std::vector<Chunk*> again;
    std::vector<std::pair<Chunk*, std::string>> finished;
    bool stop = false;
    while (!stop) {
      io_uring_cqe* cqe = nullptr;
      const int w = io_uring_wait_cqe(&ring_, &cqe);
      if (w == -EINTR || w == -EAGAIN || w == -ETIME) continue;
      if (w < 0) {
        std::fprintf(stderr, "moetier: error: io_uring_wait_cqe: %s\n", errno_text(-w).c_str());
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      batch.clear();
      unsigned head, n = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        batch.emplace_back(static_cast<Chunk*>(io_uring_cqe_get_data(cqe)), cqe->res);
        ++n;
      }
      io_uring_cq_advance(&ring_, n);

      again.clear();
      finished.clear();
      {
        // Under sq_mu_: a chunk was queued under it before its read went to the kernel, so
        // this also orders the submitter's writes before ours for ThreadSanitizer, which
        // cannot see the hand-over through the kernel.
        std::lock_guard<std::mutex> lk(sq_mu_);
        int done_reads = 0;
        for (auto& [c, res] : batch) {
          if (!c) {
            stop = true;
            continue;
          }
          ++done_reads;
          std::string err;
          if (!c->nop && core_->on_read(*c, res, &err) == Core::Next::kAgain) again.push_back(c);
          else finished.emplace_back(c, std::move(err));
        }
        inflight_ -= done_reads;
        // Continuations and retries go first: they hold a request that is already under way.
        for (auto it = again.rbegin(); it != again.rend(); ++it) pending_.push_front(*it);
        fill_locked();
      }
      // Checksums and callbacks only once the kernel has its next reads.
      for (auto& [c, err] : finished) core_->finish_chunk(*c, err);
    }
  }

  std::unique_ptr<Core> core_;
  std::unique_ptr<io_uring> ring_owner_;
  io_uring& ring_;
  int depth_;
  bool fixed_files_ = false;
  std::mutex sq_mu_;
  std::deque<Chunk*> pending_;
  int inflight_ = 0;
  struct FixedBuf {
    uint8_t* base;
    size_t bytes;
    int index;
  };
  std::vector<FixedBuf> fixed_bufs_;  // sorted by base; written once, under sq_mu_
  std::atomic<uint64_t> fixed_reads_{0};
  std::thread reaper_;
};

// io_uring_queue_init and a check that the kernel has IORING_OP_READ (5.6+).
Status init_ring(io_uring* ring, int depth) {
  const int r = io_uring_queue_init(static_cast<unsigned>(depth), ring, 0);
  if (r < 0) return make_error("io_uring_queue_init: " + errno_text(-r));
  io_uring_probe* probe = io_uring_get_probe_ring(ring);
  const bool has_read = probe && io_uring_opcode_supported(probe, IORING_OP_READ);
  if (probe) io_uring_free_probe(probe);
  if (!has_read) {
    io_uring_queue_exit(ring);
    return make_error("the kernel's io_uring lacks IORING_OP_READ");
  }
  return ok_status();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

LoaderStats BlobLoader::stats() const { return {}; }

Status BlobLoader::load(int32_t layer, int32_t expert, uint8_t* dst) {
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status status = ok_status();
  };
  auto w = std::make_shared<Wait>();
  load_async(layer, expert, dst, [w](Status s) {
    std::lock_guard<std::mutex> lk(w->mu);
    w->status = std::move(s);
    w->done = true;
    w->cv.notify_all();
  });
  std::unique_lock<std::mutex> lk(w->mu);
  w->cv.wait(lk, [&] { return w->done; });
  return std::move(w->status);
}

Result<std::unique_ptr<BlobLoader>> make_blob_loader(const ExpertStore& store, const LoaderOptions& opt) {
  if (opt.queue_depth < 1 || opt.queue_depth > kMaxQueueDepth)
    return make_error("blob loader: queue_depth must be in [1, " + std::to_string(kMaxQueueDepth) + "], got " +
                      std::to_string(opt.queue_depth));
  if (opt.max_retries < 0 || opt.max_retries > 1000)
    return make_error("blob loader: max_retries must be in [0, 1000], got " + std::to_string(opt.max_retries));
  if (opt.chunk_bytes == 0 || opt.chunk_bytes % kBlobAlign != 0)
    return make_error("blob loader: chunk_bytes must be a positive multiple of " + std::to_string(kBlobAlign) +
                      ", got " + std::to_string(opt.chunk_bytes));

  auto core = std::make_unique<Core>(store, opt);
  MT_TRY(core->open_files());
  const int threads = std::min(opt.queue_depth, kMaxPreadThreads);
  if (opt.inject || opt.force_pread) {
    return std::unique_ptr<BlobLoader>(new PreadLoader(std::move(core), opt.inject, threads));
  }
  auto ring = std::make_unique<io_uring>();
  std::memset(ring.get(), 0, sizeof(io_uring));
  Status s = init_ring(ring.get(), opt.queue_depth);
  if (!s.ok()) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true))
      std::fprintf(stderr, "moetier: warning: io_uring unavailable (%s); reading experts with pread from %d threads\n",
                   s.error().c_str(), threads);
    return std::unique_ptr<BlobLoader>(new PreadLoader(std::move(core), ReadFn(), threads));
  }
  return std::unique_ptr<BlobLoader>(new UringLoader(std::move(core), std::move(ring), opt.queue_depth));
}

}  // namespace mt::offload
