#include "runtime/engine/store_dense.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace mt {

Result<TensorStore> open_store_dense(const offload::ExpertStore& store) {
  const offload::StoreManifest& m = store.manifest();
  const std::filesystem::path path = store.dense_path();
  MT_ASSIGN(std::unique_ptr<MappedFile> mapped, MappedFile::open(path));
  std::shared_ptr<MappedFile> file(std::move(mapped));
  const std::string fname = path.filename().string();

  std::vector<TensorInfo> tensors(m.dense.size());
  for (size_t i = 0; i < m.dense.size(); ++i) {
    const offload::DenseTensorInfo& d = m.dense[i];
    // ExpertStore::open checked the size; the file may have shrunk since.
    if (d.offset + d.bytes > file->size())
      return make_error(path.string() + " is truncated: tensor '" + d.name + "' needs bytes [" +
                        std::to_string(d.offset) + ", " + std::to_string(d.offset + d.bytes) + ") but the file has " +
                        std::to_string(file->size()) + " bytes; re-run moetier convert");
    TensorInfo& t = tensors[i];
    t.name = d.name;
    t.dtype = d.dtype;
    t.shape = d.shape;
    t.data = file->data() + d.offset;
    t.nbytes = d.bytes;
    t.file = fname;
    t.group = is_packed(d.dtype) ? m.dense_group : 0;
  }

  // Every tensor's checksum, largest work spread over the threads.
  std::vector<uint32_t> got(m.dense.size());
  const auto n = static_cast<int64_t>(m.dense.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) got[i] = offload::crc32c(tensors[i].data, tensors[i].nbytes);
  for (size_t i = 0; i < m.dense.size(); ++i)
    if (got[i] != m.dense[i].crc) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "crc32c 0x%08x, expected 0x%08x", got[i], m.dense[i].crc);
      return make_error(path.string() + ": tensor '" + m.dense[i].name + "' at offset " +
                        std::to_string(m.dense[i].offset) + " is corrupt: " + buf + "; re-run moetier convert");
    }
  return TensorStore::from_mapping(std::move(file), std::move(tensors));
}

}  // namespace mt
