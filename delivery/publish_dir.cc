#include "delivery/publish_dir.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace edgesplit {

absl::Status PublishDirectory(
    const std::string& target,
    const std::function<absl::Status(const std::string& staging)>& fill) {
  namespace fs = std::filesystem;
  static std::atomic<int64_t> counter{0};
  const fs::path t(target);
  const std::string staging =
      absl::StrCat(t.parent_path().string(), "/.", t.filename().string(),
                   ".partial.", getpid(), ".", ++counter);
  std::error_code ec;
  fs::remove_all(staging, ec);
  fs::create_directories(staging, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", staging, ": ", ec.message()));
  }
  absl::Status s = fill(staging);
  if (s.ok()) {
    fs::rename(staging, target, ec);
    if (ec) {
      s = absl::InternalError(absl::StrCat("cannot move ", staging, " to ",
                                           target, ": ", ec.message()));
    }
  }
  if (!s.ok()) fs::remove_all(staging, ec);
  return s;
}

}  // namespace edgesplit
