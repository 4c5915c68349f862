#include "runtime/engine/store_dense.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/aligned_buffer.h"

namespace mt {

namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Result<TensorStore> open_store_dense(const offload::ExpertStore& store) {
  const offload::StoreManifest& m = store.manifest();
  const std::filesystem::path path = store.dense_path();
  const std::string fname = path.filename().string();
  uint64_t need = 0;
  for (const auto& d : m.dense) need = std::max(need, d.offset + d.bytes);

  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) return make_error(path.string() + ": cannot open for reading: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return make_error(path.string() + ": cannot stat: " + std::strerror(errno));
  // ExpertStore::open checked the size; the file may have shrunk since.
  for (const auto& d : m.dense)
    if (d.offset + d.bytes > static_cast<uint64_t>(st.st_size))
      return make_error(path.string() + " is truncated: tensor '" + d.name + "' needs bytes [" +
                        std::to_string(d.offset) + ", " + std::to_string(d.offset + d.bytes) + ") but the file has " +
                        std::to_string(st.st_size) + " bytes; re-run moetier convert");
  // In anonymous memory on huge pages: a file mapping's 4 KiB pages cost ~15% of the lm_head's
  // rate in TLB misses on the wide model (docs/kernels.md).
  std::shared_ptr<AlignedBuffer> buf;
  try {
    buf = std::make_shared<AlignedBuffer>(static_cast<size_t>(need), true);
  } catch (const std::bad_alloc&) {
    return make_error(path.string() + ": cannot allocate " + std::to_string(need) + " bytes for the dense weights");
  }
  for (uint64_t off = 0; off < need;) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(need - off, uint64_t{64} << 20));
    const ssize_t r = ::pread(f.fd, buf->data() + off, chunk, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return make_error(path.string() + ": read error at offset " + std::to_string(off) + ": " + std::strerror(errno));
    if (r == 0) return make_error(path.string() + " ended at offset " + std::to_string(off) + " while reading; re-run moetier convert");
    off += static_cast<uint64_t>(r);
  }

  std::vector<TensorInfo> tensors(m.dense.size());
  for (size_t i = 0; i < m.dense.size(); ++i) {
    const offload::DenseTensorInfo& d = m.dense[i];
    TensorInfo& t = tensors[i];
    t.name = d.name;
    t.dtype = d.dtype;
    t.shape = d.shape;
    t.data = buf->data() + d.offset;
    t.nbytes = d.bytes;
    t.file = fname;
    t.group = is_packed(d.dtype) ? m.dense_group : 0;
    t.ggml_type = d.ggml_type;
    t.ggml_tiled = d.ggml_tiles;
  }

  // Every tensor's checksum, the work spread over the threads.
  std::vector<uint32_t> got(m.dense.size());
  const auto n = static_cast<int64_t>(m.dense.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) got[static_cast<size_t>(i)] = offload::crc32c(tensors[size_t(i)].data, tensors[size_t(i)].nbytes);
  for (size_t i = 0; i < m.dense.size(); ++i)
    if (got[i] != m.dense[i].crc) {
      char hex[96];
      std::snprintf(hex, sizeof hex, "crc32c 0x%08x, expected 0x%08x", got[i], m.dense[i].crc);
      return make_error(path.string() + ": tensor '" + m.dense[i].name + "' at offset " +
                        std::to_string(m.dense[i].offset) + " is corrupt: " + hex + "; re-run moetier convert");
    }
  return TensorStore::from_memory(std::move(buf), std::move(tensors));
}

}  // namespace mt
