// Writing a directory so readers see all of it or none: it is filled as a
// hidden staging directory beside the target, then renamed into place.
#ifndef EDGESPLIT_DELIVERY_PUBLISH_DIR_H_
#define EDGESPLIT_DELIVERY_PUBLISH_DIR_H_

#include <functional>
#include <string>

#include "absl/status/status.h"

namespace edgesplit {

// Calls `fill(staging)` on a fresh directory named ".<leaf>.partial.<pid>.<n>"
// beside `target` (unique per process and call, so concurrent writers never
// remove each other's), then renames it to `target`. On any failure the
// staging directory is removed and `target` left as it was. Staging
// directories of `target` left by processes that died are removed first.
// `target` must have a file name (no trailing '/') and, on POSIX, not be a
// non-empty directory.
absl::Status PublishDirectory(
    const std::string& target,
    const std::function<absl::Status(const std::string& staging)>& fill);

}  // namespace edgesplit

#endif  // EDGESPLIT_DELIVERY_PUBLISH_DIR_H_
