// Asynchronous reads of expert blobs from the packed store into caller-provided 4096-aligned
// buffers: io_uring with O_DIRECT and many reads in flight, a completion thread, bounded
// retries of short reads / EIO / EAGAIN / ECANCELED, crc32c verification on a blob's first
// load, and a pread fallback (one warning) where io_uring is unavailable.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "offload/expert_store.h"
#include "runtime/core/aligned_buffer.h"
#include "runtime/core/status.h"

namespace mt::offload {

// Completion callback: runs on the loader's completion thread; Status names layer and expert.
using LoadDone = std::function<void(Status)>;

struct LoaderStats {
  uint64_t loads = 0;               // load_async calls
  uint64_t loads_failed = 0;        // callbacks that got an error
  uint64_t bytes_read = 0;          // bytes delivered by reads
  uint64_t reads = 0;               // read calls / SQEs issued
  uint64_t short_reads = 0;         // reads continued after returning fewer bytes than asked
  uint64_t retries = 0;             // reads re-issued after EIO/EAGAIN/ECANCELED/EINTR/EOF
  uint64_t checksums_verified = 0;  // first loads whose crc32c matched
  uint64_t fixed_reads = 0;         // io_uring reads into registered buffers (read_fixed)
};

class BlobLoader {
 public:
  virtual ~BlobLoader() = default;
  // Starts reading blob (layer, expert) into dst (4096-aligned, blob_bytes). Never blocks on I/O.
  virtual void load_async(int32_t layer, int32_t expert, uint8_t* dst, LoadDone done) = 0;
  // Convenience: load and wait. Not from inside a LoadDone callback (it would wait forever).
  Status load(int32_t layer, int32_t expert, uint8_t* dst);
  // Which backend runs ("io_uring" or "pread").
  virtual const char* backend() const = 0;
  // Counters since creation (zero for loaders that do not keep them).
  virtual LoaderStats stats() const;
  // Registers destination memory with the kernel once (io_uring fixed buffers), so reads into
  // it skip the per-I/O page pinning. Call before loads into these regions start. Returns
  // false where the backend has no such thing or the kernel refused (then reads still work).
  virtual bool register_buffers(const std::vector<std::pair<uint8_t*, size_t>>& regions) {
    (void)regions;
    return false;
  }
};

// Where reads go, replaceable for fault-injection tests: returns bytes read (>= 0) or -errno,
// like pread(2). The default reads the file. `fd` is the file's O_DIRECT descriptor when
// direct_io (its buffered one after an EINVAL, or to continue a short read that stopped at an
// unaligned point); it may be called from several threads at once. A ReadFn that throws
// counts as -EIO.
using ReadFn = std::function<int64_t(int fd, uint8_t* dst, uint64_t bytes, uint64_t offset)>;

struct LoaderOptions {
  int queue_depth = 32;        // reads in flight
  int max_retries = 4;         // per read, for short reads / EIO / EAGAIN / ECANCELED
  bool verify_checksums = true;  // crc32c on each blob's first load
  bool force_pread = false;    // skip io_uring
  bool direct_io = true;       // O_DIRECT (falls back to buffered where the filesystem refuses)
  ReadFn inject;               // when set, used instead of real I/O (forces the pread path)
  uint64_t chunk_bytes = 1 << 20;  // a blob is read in chunks of this size (multiple of 4096)
};

// The loader keeps its own copy of the store's manifest and its own file descriptors, so the
// ExpertStore may go away first. Destroying the loader waits for every load in flight and
// their callbacks; do not destroy it, or call load(), from inside a callback.
Result<std::unique_ptr<BlobLoader>> make_blob_loader(const ExpertStore& store, const LoaderOptions& opt);

using mt::AlignedBuffer;  // runtime/core/aligned_buffer.h


}  // namespace mt::offload
