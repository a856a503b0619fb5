// gRPC glue of the controller's adapter registry and blob store (callback
// API). Logic lives in AdapterRegistry.
//
// Who may call what (checked against the caller's certificate; with an
// insecure transport every caller is trusted):
//   PutBlob, RegisterAdapter            admins
//   ResolveAdapter                      the node named in the request, or a
//                                       device its `devices:` rules allow
//                                       the adapter (no peers for devices)
//   ReportHeld                          the node named in the request
//                                       (adapters and model copies, held
//                                       or dropped)
//   ListAdapters                        servers and admins; a device only
//                                       the names of adapters its
//                                       `devices:` rules allow
//   GetPlacement                        servers and admins
//   RegisterModelCopy                   admins
//   ResolveModelCopy                    servers, admins, devices their
//                                       `devices:` rules allow the model
//   BlobService.ReadBlob                servers and admins; a device only
//                                       the files of adapters and the parts
//                                       of model copies it may use
#ifndef EDGESPLIT_CONTROLLER_ADAPTER_SERVICE_H_
#define EDGESPLIT_CONTROLLER_ADAPTER_SERVICE_H_

#include <memory>
#include <optional>

#include "controller/adapter_placement.h"
#include "controller/adapter_registry.h"
#include "controller/controller.h"
#include "controller/model_copies.h"
#include "delivery/blob_service.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "security/tls.h"

namespace edgesplit {

// Thread-safe. `controller`, `registry`, `security` and `demand` outlive
// it; `demand` (null: what-if counts only) is where session opens are
// counted (ControllerServiceImpl::set_adapter_demand).
class AdapterServiceImpl final : public v1::AdapterRegistry::CallbackService {
 public:
  AdapterServiceImpl(Controller* controller, AdapterRegistry* registry,
                     const TransportSecurity* security,
                     AdapterPlacementConfig placement = {},
                     const AdapterDemand* demand = nullptr);

  // Serves `copies` too (RegisterModelCopy, ResolveModelCopy); call before
  // serving. `copies` outlives the service.
  void set_model_copies(ModelCopyRegistry* copies) { copies_ = copies; }

  // Which adapters each server should cache, placed again from the demand
  // at `now` when the last placement is older than the config's interval
  // (placements in between are the same answer). FAILED_PRECONDITION when
  // placement or the registry is off.
  absl::StatusOr<v1::AdapterPlacement> Placement(absl::Time now);

  // The controller's BlobService (the registered originals); register it
  // on the same server.
  BlobServiceImpl* blob_service() { return blobs_.get(); }

  grpc::ServerUnaryReactor* PutBlob(grpc::CallbackServerContext* ctx,
                                    const v1::PutBlobRequest* request,
                                    v1::PutBlobResponse* response) override;
  grpc::ServerUnaryReactor* RegisterAdapter(
      grpc::CallbackServerContext* ctx,
      const v1::RegisterAdapterRequest* request,
      v1::RegisterAdapterResponse* response) override;
  grpc::ServerUnaryReactor* ListAdapters(
      grpc::CallbackServerContext* ctx, const v1::ListAdaptersRequest* request,
      v1::ListAdaptersResponse* response) override;
  grpc::ServerUnaryReactor* ResolveAdapter(
      grpc::CallbackServerContext* ctx,
      const v1::ResolveAdapterRequest* request,
      v1::ResolveAdapterResponse* response) override;
  grpc::ServerUnaryReactor* ReportHeld(
      grpc::CallbackServerContext* ctx, const v1::ReportHeldRequest* request,
      v1::ReportHeldResponse* response) override;
  grpc::ServerUnaryReactor* GetPlacement(
      grpc::CallbackServerContext* ctx, const v1::GetPlacementRequest* request,
      v1::AdapterPlacement* response) override;
  grpc::ServerUnaryReactor* RegisterModelCopy(
      grpc::CallbackServerContext* ctx,
      const v1::RegisterModelCopyRequest* request,
      v1::RegisterModelCopyResponse* response) override;
  grpc::ServerUnaryReactor* ResolveModelCopy(
      grpc::CallbackServerContext* ctx,
      const v1::ResolveModelCopyRequest* request,
      v1::ResolveModelCopyResponse* response) override;

 private:
  // The caller, its token checked.
  absl::StatusOr<Peer> Authenticated(grpc::CallbackServerContext* ctx) const;
  static bool IsDevice(const Peer& peer);
  // The controller's `devices:` rules for this device, model and adapter.
  absl::Status DeviceMayUse(const Peer& peer, const std::string& model_id,
                            const std::string& name) const;
  absl::Status Caller(grpc::CallbackServerContext* ctx, Identity::Kind kind,
                      const std::string* name, const char* action) const;
  absl::Status MayRead(grpc::CallbackServerContext* ctx,
                       const std::string& blob) const;

  Controller* const controller_;
  AdapterRegistry* const registry_;
  const TransportSecurity* const security_;
  const AdapterPlacementConfig placement_config_;
  const AdapterDemand* const demand_;
  ModelCopyRegistry* copies_ = nullptr;  // Set before serving.
  std::unique_ptr<BlobServiceImpl> blobs_;
  absl::Mutex placement_mu_;
  std::optional<v1::AdapterPlacement> placement_ ABSL_GUARDED_BY(placement_mu_);
  absl::Time placed_at_ ABSL_GUARDED_BY(placement_mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_ADAPTER_SERVICE_H_
