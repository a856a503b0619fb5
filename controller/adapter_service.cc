#include "controller/adapter_service.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "proto/grpc_status.h"

namespace edgesplit {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx,
                                 const absl::Status& s) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace

AdapterServiceImpl::AdapterServiceImpl(Controller* controller,
                                       AdapterRegistry* registry,
                                       const TransportSecurity* security,
                                       AdapterPlacementConfig placement,
                                       const AdapterDemand* demand)
    : controller_(controller),
      registry_(registry),
      security_(security),
      placement_config_(std::move(placement)),
      demand_(demand) {
  blobs_ = std::make_unique<BlobServiceImpl>(
      registry_->enabled() ? registry_->store() : nullptr,
      [this](grpc::CallbackServerContext* ctx,
             const v1::ReadBlobRequest& request) {
        return MayRead(ctx, request.id());
      });
}

absl::StatusOr<Peer> AdapterServiceImpl::Authenticated(
    grpc::CallbackServerContext* ctx) const {
  ES_ASSIGN_OR_RETURN(Peer peer, security_->PeerOf(*ctx));
  ES_RETURN_IF_ERROR(controller_->CheckToken(peer));
  return peer;
}

bool AdapterServiceImpl::IsDevice(const Peer& peer) {
  return peer.authenticated && peer.identity.kind == Identity::Kind::kDevice;
}

absl::Status AdapterServiceImpl::DeviceMayUse(const Peer& peer,
                                              const std::string& model_id,
                                              const std::string& name) const {
  v1::OpenSessionRequest use;
  use.set_device(peer.identity.name);
  use.set_model_id(model_id);
  use.set_adapter(name);
  return controller_->AuthorizeDevice(use);
}

absl::Status AdapterServiceImpl::MayRead(grpc::CallbackServerContext* ctx,
                                         const std::string& blob) const {
  ES_ASSIGN_OR_RETURN(Peer peer, Authenticated(ctx));
  if (!registry_->enabled()) {
    return absl::NotFoundError("this controller keeps no blobs");
  }
  // Servers and admins (and insecure loopback) read any blob; a device
  // only the files of adapters its rules let it use.
  if (!IsDevice(peer)) return absl::OkStatus();
  for (const auto& [model, name] : registry_->AdaptersWithBlob(blob)) {
    if (DeviceMayUse(peer, model, name).ok()) return absl::OkStatus();
  }
  if (copies_ != nullptr) {
    for (const std::string& model : copies_->ModelsWithBlob(blob)) {
      if (DeviceMayUse(peer, model, "").ok()) return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "device \"", peer.identity.name, "\" may not read blob ", blob));
}

absl::Status AdapterServiceImpl::Caller(grpc::CallbackServerContext* ctx,
                                        Identity::Kind kind,
                                        const std::string* name,
                                        const char* action) const {
  ES_ASSIGN_OR_RETURN(Peer peer, Authenticated(ctx));
  return name != nullptr ? CheckPeerNamed(peer, kind, *name)
                         : CheckPeerKind(peer, kind, action);
}

grpc::ServerUnaryReactor* AdapterServiceImpl::PutBlob(
    grpc::CallbackServerContext* ctx, const v1::PutBlobRequest* request,
    v1::PutBlobResponse* response) {
  absl::Status s = Caller(ctx, Identity::Kind::kAdmin, nullptr, "upload");
  if (s.ok()) {
    auto r = registry_->PutBlob(*request);
    s = r.status();
    if (r.ok()) *response = *std::move(r);
  }
  return Finish(ctx, s);
}

grpc::ServerUnaryReactor* AdapterServiceImpl::RegisterAdapter(
    grpc::CallbackServerContext* ctx, const v1::RegisterAdapterRequest* request,
    v1::RegisterAdapterResponse*) {
  absl::Status s =
      Caller(ctx, Identity::Kind::kAdmin, nullptr, "register adapters");
  if (s.ok()) s = registry_->Register(request->adapter());
  return Finish(ctx, s);
}

grpc::ServerUnaryReactor* AdapterServiceImpl::ListAdapters(
    grpc::CallbackServerContext* ctx, const v1::ListAdaptersRequest* request,
    v1::ListAdaptersResponse* response) {
  absl::StatusOr<Peer> peer = Authenticated(ctx);
  if (!peer.ok()) return Finish(ctx, peer.status());
  v1::ListAdaptersResponse all = registry_->List(request->model_id());
  if (!IsDevice(*peer)) {
    *response = std::move(all);
    return Finish(ctx, absl::OkStatus());
  }
  // A device (an app's `/v1/models`, say) learns the names of the
  // adapters it may use; where their files are and who holds them it asks
  // ResolveAdapter, one adapter at a time.
  for (v1::RegisteredAdapter& a : *all.mutable_adapters()) {
    if (!DeviceMayUse(*peer, a.model_id(), a.name()).ok()) continue;
    v1::RegisteredAdapter* named = response->add_adapters();
    named->set_model_id(a.model_id());
    named->set_name(a.name());
  }
  return Finish(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdapterServiceImpl::ResolveAdapter(
    grpc::CallbackServerContext* ctx, const v1::ResolveAdapterRequest* request,
    v1::ResolveAdapterResponse* response) {
  absl::StatusOr<Peer> peer = Authenticated(ctx);
  absl::Status s = peer.status();
  const bool device = s.ok() && IsDevice(*peer);
  if (device) {
    // A device fetching its blocks' part: from the controller only (peers
    // serve servers), and only what its access rules let it use.
    s = DeviceMayUse(*peer, request->model_id(), request->name());
  } else if (s.ok()) {
    s = CheckPeerNamed(*peer, Identity::Kind::kNode, request->node());
  }
  if (s.ok()) {
    auto a = registry_->Find(request->model_id(), request->name());
    s = a.status();
    if (a.ok()) {
      std::vector<std::string> holders(a->holders().begin(),
                                       a->holders().end());
      if (device) holders.clear();
      for (const auto& [node, address] :
           controller_->PeersNearestTo(request->node(), holders)) {
        v1::BlobHolder* h = response->add_peers();
        h->set_node(node);
        h->set_address(address);
      }
      *response->mutable_adapter() = *std::move(a);
    }
  }
  return Finish(ctx, s);
}

grpc::ServerUnaryReactor* AdapterServiceImpl::ReportHeld(
    grpc::CallbackServerContext* ctx, const v1::ReportHeldRequest* request,
    v1::ReportHeldResponse*) {
  absl::Status s = Caller(ctx, Identity::Kind::kNode, &request->node(), "");
  if (s.ok() && request->model_copy()) {
    s = copies_ == nullptr
            ? absl::FailedPreconditionError(
                  "this controller keeps no model copies")
            : copies_->SetHolder(request->model_id(), request->name(),
                                 request->node(), !request->dropped());
  } else if (s.ok()) {
    s = request->dropped()
            ? registry_->RemoveHolder(request->model_id(), request->name(),
                                      request->node())
            : registry_->AddHolder(request->model_id(), request->name(),
                                   request->node());
  }
  return Finish(ctx, s);
}

grpc::ServerUnaryReactor* AdapterServiceImpl::RegisterModelCopy(
    grpc::CallbackServerContext* ctx,
    const v1::RegisterModelCopyRequest* request,
    v1::RegisterModelCopyResponse*) {
  absl::Status s =
      Caller(ctx, Identity::Kind::kAdmin, nullptr, "register model copies");
  if (s.ok() && copies_ == nullptr) {
    s = absl::FailedPreconditionError("this controller keeps no model copies");
  }
  // Reads every part back once (the whole copy) on this thread.
  if (s.ok()) s = copies_->Register(request->copy());
  // Servers whose plans name the copy failed to load it until now.
  if (s.ok()) controller_->NotifyWatchers();
  return Finish(ctx, s);
}

grpc::ServerUnaryReactor* AdapterServiceImpl::ResolveModelCopy(
    grpc::CallbackServerContext* ctx,
    const v1::ResolveModelCopyRequest* request,
    v1::ResolveModelCopyResponse* response) {
  absl::StatusOr<Peer> peer = Authenticated(ctx);
  absl::Status s = peer.status();
  const bool device = s.ok() && IsDevice(*peer);
  if (device) s = DeviceMayUse(*peer, request->model_id(), "");
  if (s.ok() && copies_ == nullptr) {
    s = absl::FailedPreconditionError("this controller keeps no model copies");
  }
  if (s.ok()) {
    auto copy = copies_->Find(request->model_id(), request->name());
    s = copy.status();
    if (copy.ok()) {
      response->set_model_id(copy->model_id());
      response->set_name(copy->name());
      *response->mutable_files() = std::move(*copy->mutable_files());
    }
  }
  if (s.ok() && !device) {
    // Peers serve servers (devices fetch from the controller only).
    for (const auto& [node, address] : controller_->PeersNearestTo(
             request->node(),
             copies_->Holders(request->model_id(), request->name()))) {
      v1::BlobHolder* h = response->add_peers();
      h->set_node(node);
      h->set_address(address);
    }
  }
  return Finish(ctx, s);
}

absl::StatusOr<v1::AdapterPlacement> AdapterServiceImpl::Placement(
    absl::Time now) {
  if (!placement_config_.enabled()) {
    return absl::FailedPreconditionError(
        "adapter placement is off (no adapter_placement: storage in the "
        "controller config)");
  }
  if (!registry_->enabled()) {
    return absl::FailedPreconditionError(
        "adapter placement needs the adapter registry (state_dir)");
  }
  absl::MutexLock lock(&placement_mu_);
  if (placement_.has_value() && now - placed_at_ < placement_config_.interval) {
    return *placement_;
  }
  AdapterPlacementInput input;
  input.config = placement_config_;
  v1::ListAdaptersResponse listed = registry_->List("");
  input.adapters.assign(listed.adapters().begin(), listed.adapters().end());
  ES_ASSIGN_OR_RETURN(v1::GetPlanResponse plans, controller_->GetPlan(""));
  input.model_servers = ModelServers(plans);
  if (demand_ != nullptr) input.demand = demand_->At(now);
  for (const auto& [key, requests] : placement_config_.what_if) {
    input.demand[key] += requests;
  }
  ES_ASSIGN_OR_RETURN(v1::AdapterPlacement placed, PlaceAdapters(input));
  placement_ = placed;
  placed_at_ = now;
  return placed;
}

grpc::ServerUnaryReactor* AdapterServiceImpl::GetPlacement(
    grpc::CallbackServerContext* ctx, const v1::GetPlacementRequest* request,
    v1::AdapterPlacement* response) {
  absl::StatusOr<Peer> peer = Authenticated(ctx);
  absl::Status s = peer.status();
  if (s.ok() && IsDevice(*peer)) {
    s = absl::PermissionDeniedError("devices may not read the placement");
  } else if (s.ok() && peer->authenticated &&
             peer->identity.kind == Identity::Kind::kNode) {
    // A server reads its own row (admins read any, or all).
    s = CheckPeerNamed(*peer, Identity::Kind::kNode, request->node());
  }
  absl::StatusOr<v1::AdapterPlacement> placed =
      s.ok() ? Placement(absl::Now()) : absl::StatusOr<v1::AdapterPlacement>(s);
  s = placed.status();
  if (placed.ok()) {
    *response = *std::move(placed);
    if (!request->node().empty()) {
      // Only the asking server's row (the totals stay; the demand list,
      // one entry per adapter, is for operators).
      response->clear_demand();
      auto* servers = response->mutable_servers();
      for (int i = servers->size() - 1; i >= 0; --i) {
        if ((*servers)[i].node() != request->node())
          servers->DeleteSubrange(i, 1);
      }
    }
  }
  return Finish(ctx, s);
}

}  // namespace edgesplit
