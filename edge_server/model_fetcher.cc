#include "edge_server/model_fetcher.h"

#include <filesystem>
#include <vector>

#include "base/status_macros.h"

namespace edgesplit {

absl::StatusOr<std::string> ClusterModelSource::Materialize(
    const std::string& model_id, const std::string& name) {
  ES_ASSIGN_OR_RETURN(const std::string dir,
                      ModelCopyDir(model_dir_, model_id, name));
  absl::MutexLock lock(&mu_);
  std::error_code ec;
  // Copies are written whole (a staging directory renamed into place) and
  // names are immutable: a directory here is the complete copy.
  if (!std::filesystem::exists(dir, ec)) {
    ES_ASSIGN_OR_RETURN(
        v1::ResolveModelCopyResponse resolved,
        ResolveModelCopy(delivery_->controller(), model_id, name,
                         delivery_->node(), absl::Seconds(10)));
    std::vector<std::unique_ptr<BlobSource>> owned =
        delivery_->Sources(resolved.peers());
    std::vector<BlobSource*> sources;
    for (const auto& s : owned) sources.push_back(s.get());
    std::filesystem::create_directories(
        std::filesystem::path(dir).parent_path(), ec);
    absl::Status written = MaterializeModelCopy(
        ToModelCopy(resolved), sources, delivery_->fetcher(),
        delivery_->store(), dir, &stats_);
    // Another process sharing the directory wrote it first.
    if (!written.ok() && !absl::IsAlreadyExists(written)) return written;
  }
  // Also after a restart (the controller may have forgotten us). Best
  // effort: without it, peers fetch from the controller.
  (void)delivery_->Report(model_id, name, /*model_copy=*/true,
                          /*dropped=*/false);
  return dir;
}

ModelFetchStats ClusterModelSource::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace edgesplit
