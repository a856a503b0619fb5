// Whole-file reads and crash-safe whole-file writes, with errors that name
// the file. Thread-compatible (no shared state).
#ifndef EDGESPLIT_BASE_FILE_UTIL_H_
#define EDGESPLIT_BASE_FILE_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace edgesplit {

// The bytes of `path`. NOT_FOUND when it does not exist, otherwise the
// errno's status; the message starts with the path.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Replaces `path` with the concatenation of `pieces` so that a crash leaves
// the old file or the whole new one, never a torn file: written to a
// temporary beside it, fsync'd, renamed over `path`, then the directory is
// fsync'd so the rename itself is durable. On error the temporary is gone
// and `path` is untouched. The temporary is named after the process:
// callers serialise concurrent writes to one path. `mode` is the new file's
// permission bits (before the umask): 0600 for private keys, which are then
// never readable by others, not even for a moment.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::Span<const absl::string_view> pieces,
                                 int mode = 0644);
inline absl::Status WriteFileAtomically(const std::string& path,
                                        absl::string_view contents,
                                        int mode = 0644) {
  return WriteFileAtomically(path, absl::MakeConstSpan(&contents, 1), mode);
}

}  // namespace edgesplit

#endif  // EDGESPLIT_BASE_FILE_UTIL_H_
