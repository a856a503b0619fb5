#include "edge_server/adapter_fetcher.h"

#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "delivery/blob_service.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "proto/grpc_status.h"
#include "runtime/adapter_name.h"

namespace edgesplit {

ClusterAdapterSource::ClusterAdapterSource(const ClusterDelivery* delivery,
                                           const std::string& adapter_dir,
                                           int64_t disk_bytes)
    : delivery_(delivery), disk_(&delivery->store(), disk_bytes) {
  if (disk_bytes <= 0 || adapter_dir.empty()) return;
  std::vector<HeldAdapter> gone;
  {
    absl::MutexLock lock(&disk_mu_);
    disk_.Scan(adapter_dir);
    gone = disk_.EvictOverBudget("");
    stats_.evicted += static_cast<int64_t>(gone.size());
  }
  ReportDropped(gone);
}

absl::StatusOr<bool> ClusterAdapterSource::UseIfHeld(
    const std::string& model_id, const std::string& name,
    const std::string& dir) {
  ES_ASSIGN_OR_RETURN(std::string held, FindAdapterDir(dir, model_id, name));
  if (held.empty()) return false;
  // Another stage of this server got it first, or the operator put it
  // there (never evicted: not the disk's).
  absl::MutexLock lock(&disk_mu_);
  if (disk_.Holds(held)) disk_.Use({model_id, name, held, {}});
  return true;
}

absl::Status ClusterAdapterSource::Materialize(const std::string& model_id,
                                               const std::string& name,
                                               const std::string& dir) {
  ES_ASSIGN_OR_RETURN(bool held, UseIfHeld(model_id, name, dir));
  if (held) return absl::OkStatus();
  absl::MutexLock lock(&fetch_mu_);
  // Fetched meanwhile by the download we waited for?
  ES_ASSIGN_OR_RETURN(held, UseIfHeld(model_id, name, dir));
  if (held) return absl::OkStatus();
  return MaterializeLocked(model_id, name, dir);
}

void ClusterAdapterSource::Used(const std::string& model_id,
                                const std::string& name,
                                const std::string& dir) {
  (void)UseIfHeld(model_id, name, dir);
}

void ClusterAdapterSource::ReportDropped(
    const std::vector<HeldAdapter>& gone) const {
  for (const HeldAdapter& a : gone) {
    if (a.model_id.empty()) continue;  // Its hashed directory only.
    (void)delivery_->Report(a.model_id, a.name, /*model_copy=*/false,
                            /*dropped=*/true);
  }
}

absl::Status ClusterAdapterSource::MaterializeLocked(
    const std::string& model_id, const std::string& name,
    const std::string& dir) {
  ES_ASSIGN_OR_RETURN(v1::ResolveAdapterResponse resolved,
                      ResolveAdapter(delivery_->controller(), model_id, name,
                                     delivery_->node(), absl::Seconds(10)));
  // The nearest holders first, the controller's originals last.
  ClusterDelivery::SourceList sources = delivery_->Sources(resolved.peers());
  ES_ASSIGN_OR_RETURN(std::string fetched, FetchedAdaptersDir(dir, model_id));
  AdapterFetchStats got;
  absl::Status s = MaterializeFromSources(resolved.adapter(), sources.list,
                                          delivery_->fetcher(),
                                          delivery_->store(), fetched, &got);
  HeldAdapter held{model_id, name, absl::StrCat(fetched, "/", name), {}};
  for (const v1::AdapterFile& f : resolved.adapter().files()) {
    held.blobs[f.blob()] = f.bytes();
  }
  std::vector<HeldAdapter> gone;
  {
    absl::MutexLock lock(&disk_mu_);
    stats_.adapters += got.adapters;
    stats_.bytes_received += got.bytes_received;
    for (const auto& [from, n] : got.blobs_from) stats_.blobs_from[from] += n;
    if (s.ok()) {
      disk_.Use(held);
      gone = disk_.EvictOverBudget(held.dir);
      stats_.evicted += static_cast<int64_t>(gone.size());
    }
  }
  ReportDropped(gone);
  ES_RETURN_IF_ERROR(s);
  // Best effort: without the report, peers fetch from the controller.
  (void)delivery_->Report(model_id, name, /*model_copy=*/false,
                          /*dropped=*/false);
  return absl::OkStatus();
}

absl::StatusOr<int> ClusterAdapterSource::Prefetch(
    const std::string& dir, const std::function<bool()>& stopped) {
  v1::GetPlacementRequest request;
  request.set_node(delivery_->node());
  v1::AdapterPlacement placement;
  {
    auto registry = v1::AdapterRegistry::NewStub(delivery_->controller());
    grpc::ClientContext ctx;
    ctx.set_deadline(ToChrono(absl::Now() + absl::Seconds(10)));
    absl::Status s =
        FromGrpcStatus(registry->GetPlacement(&ctx, request, &placement));
    if (absl::IsFailedPrecondition(s)) return 0;  // Placement is off.
    ES_RETURN_IF_ERROR(s);
  }
  int fetched = 0;
  absl::Status first_error;
  for (const v1::ServerPlacement& server : placement.servers()) {
    if (server.node() != delivery_->node()) continue;
    for (const v1::PlacedAdapter& a : server.adapters()) {
      if (stopped && stopped()) return fetched;
      // Names become paths: never trust them further than the registry's
      // own rule.
      absl::Status s = ValidateAdapterName(a.name());
      absl::StatusOr<std::string> held =
          s.ok() ? FindAdapterDir(dir, a.model_id(), a.name())
                 : absl::StatusOr<std::string>(s);
      if (held.ok() && !held->empty()) {
        // Placed here: counts as a use, so eviction spares it longest.
        (void)Materialize(a.model_id(), a.name(), dir);
        continue;
      }
      s = held.status();
      if (s.ok()) s = Materialize(a.model_id(), a.name(), dir);
      if (s.ok()) {
        ++fetched;
      } else if (first_error.ok()) {
        first_error = s;
      }
    }
  }
  if (!first_error.ok()) return first_error;
  return fetched;
}

AdapterFetchStats ClusterAdapterSource::stats() const {
  absl::MutexLock lock(&disk_mu_);
  return stats_;
}

}  // namespace edgesplit
