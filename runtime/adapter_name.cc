#include "runtime/adapter_name.h"

#include "absl/strings/str_cat.h"

namespace edgesplit {

absl::Status ValidateAdapterName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 128 && name[0] != '.';
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-');
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adapter name \"", name.substr(0, 128),
        "\" is not valid (letters, digits, '.', '_', '-'; at most 128)"));
  }
  return absl::OkStatus();
}

}  // namespace edgesplit
