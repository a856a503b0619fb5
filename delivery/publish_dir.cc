#include "delivery/publish_dir.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace edgesplit {
namespace {

// Removes ".<leaf>.partial.<pid>.<n>" beside `target` left by processes
// that died mid-publish (their pid no longer runs); a live writer's
// staging directory, ours included, is never touched. Assumes the
// directory is local to this host and pid namespace (as adapter and
// model directories are).
void SweepStaleStaging(const std::filesystem::path& target) {
  namespace fs = std::filesystem;
  const std::string prefix =
      absl::StrCat(".", target.filename().string(), ".partial.");
  std::error_code ec;
  fs::directory_iterator it(target.parent_path(), ec);
  if (ec) return;
  for (const fs::directory_entry& e : it) {
    const std::string name = e.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    // Exactly "<pid>.<n>": target "a" must not take "a.partial.5"'s
    // staging for its own.
    const std::string rest = name.substr(prefix.size());
    const size_t dot = rest.find('.');
    int64_t pid = 0, n = 0;
    if (dot == std::string::npos ||
        !absl::SimpleAtoi(rest.substr(0, dot), &pid) ||
        !absl::SimpleAtoi(rest.substr(dot + 1), &n) || pid <= 0 ||
        rest.find_first_not_of("0123456789.") != std::string::npos) {
      continue;
    }
    if (pid == getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 ||
        errno != ESRCH) {
      continue;  // Ours, or a process that still runs (or can't be told).
    }
    fs::remove_all(e.path(), ec);
  }
}

}  // namespace

absl::Status PublishDirectory(
    const std::string& target,
    const std::function<absl::Status(const std::string& staging)>& fill) {
  namespace fs = std::filesystem;
  static std::atomic<int64_t> counter{0};
  const fs::path t(target);
  const std::string staging =
      absl::StrCat(t.parent_path().string(), "/.", t.filename().string(),
                   ".partial.", getpid(), ".", ++counter);
  SweepStaleStaging(t);
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
