// Names of LoRA adapters, which travel in requests and name directories
// and registry entries. No LibTorch (the controller checks them too).
#ifndef EDGESPLIT_RUNTIME_ADAPTER_NAME_H_
#define EDGESPLIT_RUNTIME_ADAPTER_NAME_H_

#include <string>

#include "absl/status/status.h"

namespace edgesplit {

// Letters, digits, '.', '_', '-' (not starting with '.'), at most 128
// characters; INVALID_ARGUMENT otherwise.
absl::Status ValidateAdapterName(const std::string& name);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_ADAPTER_NAME_H_
