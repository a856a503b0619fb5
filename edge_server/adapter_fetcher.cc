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

absl::StatusOr<std::unique_ptr<ClusterAdapterSource>>
ClusterAdapterSource::Create(std::string node, std::string controller,
                             std::string blob_dir,
                             std::shared_ptr<const TransportSecurity> security,
                             FetchOptions fetch) {
  auto s = std::unique_ptr<ClusterAdapterSource>(new ClusterAdapterSource());
  s->node_ = std::move(node);
  ES_ASSIGN_OR_RETURN(
      s->controller_,
      security->Dial(controller, ControllerIdentity(security->cluster())));
  s->security_ = std::move(security);
  ES_ASSIGN_OR_RETURN(s->store_, BlobStore::Open(std::move(blob_dir)));
  s->fetcher_ = std::make_unique<BlobFetcher>(s->store_.get(), fetch);
  return s;
}

absl::Status ClusterAdapterSource::Materialize(const std::string& model_id,
                                               const std::string& name,
                                               const std::string& dir) {
  absl::MutexLock lock(&mu_);
  ES_ASSIGN_OR_RETURN(std::string held, FindAdapterDir(dir, model_id, name));
  // Another stage of this server got it first, or the operator put it there.
  if (!held.empty()) return absl::OkStatus();
  return MaterializeLocked(model_id, name, dir);
}

absl::Status ClusterAdapterSource::MaterializeLocked(
    const std::string& model_id, const std::string& name,
    const std::string& dir) {
  ES_ASSIGN_OR_RETURN(
      v1::ResolveAdapterResponse resolved,
      ResolveAdapter(controller_, model_id, name, node_, absl::Seconds(10)));
  // The nearest holders first, the controller's originals last.
  std::vector<std::unique_ptr<GrpcBlobSource>> owned;
  for (const v1::BlobHolder& peer : resolved.peers()) {
    auto channel = security_->Dial(
        peer.address(), NodeIdentity(security_->cluster(), peer.node()));
    if (channel.ok()) {
      owned.push_back(
          std::make_unique<GrpcBlobSource>(peer.node(), *std::move(channel)));
    }
  }
  owned.push_back(std::make_unique<GrpcBlobSource>("controller", controller_));
  std::vector<BlobSource*> sources;
  for (const auto& s : owned) sources.push_back(s.get());
  ES_ASSIGN_OR_RETURN(std::string fetched, FetchedAdaptersDir(dir, model_id));
  ES_RETURN_IF_ERROR(MaterializeFromSources(
      resolved.adapter(), sources, *fetcher_, *store_, fetched, &stats_));
  // Best effort: without the report, peers fetch from the controller.
  v1::ReportHeldRequest held;
  held.set_model_id(model_id);
  held.set_name(name);
  held.set_node(node_);
  v1::ReportHeldResponse ignored;
  auto registry = v1::AdapterRegistry::NewStub(controller_);
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + absl::Seconds(5)));
  (void)registry->ReportHeld(&ctx, held, &ignored);
  return absl::OkStatus();
}

absl::StatusOr<int> ClusterAdapterSource::Prefetch(
    const std::string& dir, const std::function<bool()>& stopped) {
  v1::GetPlacementRequest request;
  request.set_node(node_);
  v1::AdapterPlacement placement;
  {
    auto registry = v1::AdapterRegistry::NewStub(controller_);
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
    if (server.node() != node_) continue;
    for (const v1::PlacedAdapter& a : server.adapters()) {
      if (stopped && stopped()) return fetched;
      // Names become paths: never trust them further than the registry's
      // own rule.
      absl::Status s = ValidateAdapterName(a.name());
      absl::StatusOr<std::string> held =
          s.ok() ? FindAdapterDir(dir, a.model_id(), a.name())
                 : absl::StatusOr<std::string>(s);
      if (held.ok() && !held->empty()) continue;
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
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace edgesplit
