#include "runtime/core/text_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mt {

namespace {

// Closes on every path out of a function.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string errno_text(int e) { return std::strerror(e); }

}  // namespace

Result<std::string> read_text_file(const std::filesystem::path& path, uint64_t max_bytes) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) return make_error(path.string() + ": cannot read: " + errno_text(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return make_error(path.string() + ": cannot read: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) return make_error(path.string() + ": not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    return make_error(path.string() + ": " + std::to_string(st.st_size) + " bytes is implausibly large (at most " +
                      std::to_string(max_bytes) + " expected)");
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::pread(f.fd, out.data() + got, out.size() - got, static_cast<off_t>(got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return make_error(path.string() + ": read failed: " + errno_text(errno));
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

Status write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  const std::string tmp = path.string() + ".tmp";
  std::string failure;
  {
    Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    if (f.fd < 0) return make_error(tmp + ": cannot create: " + errno_text(errno));
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t w = ::write(f.fd, bytes.data() + done, bytes.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        failure = "write failed (disk full?): " + errno_text(errno);
        break;
      }
      done += static_cast<size_t>(w);
    }
    // fsync before rename: the rename must not reach the disk before the data does.
    if (failure.empty() && ::fsync(f.fd) != 0) failure = "fsync: " + errno_text(errno);
    const int fd = f.fd;
    f.fd = -1;
    if (::close(fd) != 0 && failure.empty()) failure = "close: " + errno_text(errno);
  }
  if (failure.empty() && std::rename(tmp.c_str(), path.c_str()) != 0)
    failure = "cannot rename into " + path.string() + ": " + errno_text(errno);
  if (!failure.empty()) {
    ::unlink(tmp.c_str());
    return make_error(tmp + ": " + failure);
  }
  // Make the rename itself durable (best effort: some filesystems refuse fsync on directories).
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  Fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd >= 0) (void)::fsync(d.fd);
  return ok_status();
}

}  // namespace mt
