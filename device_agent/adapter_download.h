// A device fetching the LoRA adapter a session names when its adapter_dir
// lacks it: the controller's registry resolves the name (checking the
// device's access rules), and its files come from the controller's
// BlobService, verified by SHA-256, into <into>/<name> (the agent passes
// FetchedAdaptersDir(adapter_dir, model_id)).
#ifndef EDGESPLIT_DEVICE_AGENT_ADAPTER_DOWNLOAD_H_
#define EDGESPLIT_DEVICE_AGENT_ADAPTER_DOWNLOAD_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace edgesplit {

// Blocking; `controller` is the agent's channel. Blobs are kept in
// <adapter_dir>/.blobs. Callers serialize downloads into one directory.
absl::Status DownloadAdapter(const std::shared_ptr<grpc::Channel>& controller,
                             const std::string& device,
                             const std::string& model_id,
                             const std::string& name,
                             const std::string& adapter_dir,
                             const std::string& into, absl::Duration timeout);

// Model copy `name` of `model_id` (a plan's Plan.model_copy) from the
// controller into <cache_dir>/.cluster/<model_id>/<name> unless it is
// there (copies are written whole); parts in <cache_dir>/.blobs. Returns
// the directory. Callers serialize downloads into one cache directory.
absl::StatusOr<std::string> DownloadModelCopy(
    const std::shared_ptr<grpc::Channel>& controller,
    const std::string& model_id, const std::string& name,
    const std::string& cache_dir, absl::Duration timeout);

}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_ADAPTER_DOWNLOAD_H_
