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
    ClusterDelivery::SourceList sources = delivery_->Sources(resolved.peers());
    std::filesystem::create_directories(
        std::filesystem::path(dir).parent_path(), ec);
    absl::Status written = MaterializeModelCopy(
        ToModelCopy(resolved), sources.list, delivery_->fetcher(),
        delivery_->store(), dir, &stats_);
    // Another process sharing the directory wrote it first.
    if (!written.ok() && !absl::IsAlreadyExists(written)) return written;
  }
  // Once per copy and run (every stage and profile asks), also for a copy
  // an earlier run fetched. Best effort: without it, peers fetch from the
  // controller, and a failed report is tried again next time.
  if (reported_.count({model_id, name}) == 0 &&
      delivery_
          ->Report(model_id, name, /*model_copy=*/true,
                   /*dropped=*/false)
          .ok()) {
    reported_.insert({model_id, name});
  }
  return dir;
}

ModelFetchStats ClusterModelSource::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace edgesplit
