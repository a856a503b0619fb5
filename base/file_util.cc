#include "base/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace edgesplit {
namespace {

absl::Status ErrnoError(int err, absl::string_view path,
                        absl::string_view what) {
  return absl::ErrnoToStatus(err, absl::StrCat(path, ": ", what));
}

// Writes all of `data` to `fd`, retrying short writes and EINTR.
bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, path, "cannot open");
  std::string out;
  char buffer[1 << 16];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      return ErrnoError(err, path, "read failed");
    }
    out.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const absl::string_view> pieces,
                                 int mode) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  // O_EXCL: a stale temporary (or a link planted there) is never reused.
  unlink(tmp.c_str());
  const int fd = open(tmp.c_str(),
                      O_WRONLY | O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return ErrnoError(errno, path, absl::StrCat("cannot create ", tmp));
  auto fail = [&](absl::string_view what, bool opened) {
    const int err = errno;
    if (opened) close(fd);
    unlink(tmp.c_str());
    return ErrnoError(err, path, what);
  };
  for (absl::string_view piece : pieces) {
    if (!WriteAll(fd, piece)) return fail("write failed", true);
  }
  if (fsync(fd) != 0) return fail("fsync failed", true);
  if (close(fd) != 0) return fail("close failed", false);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return fail("rename failed", false);
  }
  // The rename is durable once the directory entry is.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);  // Best effort: some file systems refuse it on directories.
    close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace edgesplit
