#include "edge_server/cluster_delivery.h"

#include "base/status_macros.h"
#include "delivery/blob_service.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "proto/grpc_status.h"

namespace edgesplit {

absl::StatusOr<std::unique_ptr<ClusterDelivery>> ClusterDelivery::Create(
    std::string node, const std::string& controller, std::string blob_dir,
    std::shared_ptr<const TransportSecurity> security, FetchOptions fetch) {
  auto d = std::unique_ptr<ClusterDelivery>(new ClusterDelivery());
  d->node_ = std::move(node);
  ES_ASSIGN_OR_RETURN(
      d->controller_,
      security->Dial(controller, ControllerIdentity(security->cluster())));
  d->security_ = std::move(security);
  ES_ASSIGN_OR_RETURN(d->store_, BlobStore::Open(std::move(blob_dir)));
  d->fetcher_ = std::make_unique<BlobFetcher>(d->store_.get(), fetch);
  return d;
}

ClusterDelivery::SourceList ClusterDelivery::Sources(
    const google::protobuf::RepeatedPtrField<v1::BlobHolder>& peers) const {
  SourceList sources;
  std::vector<std::unique_ptr<BlobSource>>& out = sources.owned;
  for (const v1::BlobHolder& peer : peers) {
    if (peer.node() == node_) continue;  // A stale report of our own.
    auto channel = security_->Dial(
        peer.address(), NodeIdentity(security_->cluster(), peer.node()));
    if (channel.ok()) {
      out.push_back(
          std::make_unique<GrpcBlobSource>(peer.node(), *std::move(channel)));
    }
  }
  out.push_back(std::make_unique<GrpcBlobSource>("controller", controller_));
  for (const auto& s : out) sources.list.push_back(s.get());
  return sources;
}

absl::Status ClusterDelivery::Report(const std::string& model_id,
                                     const std::string& name, bool model_copy,
                                     bool dropped) const {
  v1::ReportHeldRequest held;
  held.set_model_id(model_id);
  held.set_name(name);
  held.set_node(node_);
  held.set_model_copy(model_copy);
  held.set_dropped(dropped);
  v1::ReportHeldResponse ignored;
  auto registry = v1::AdapterRegistry::NewStub(controller_);
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + absl::Seconds(5)));
  return FromGrpcStatus(registry->ReportHeld(&ctx, held, &ignored),
                        "ReportHeld");
}

}  // namespace edgesplit
