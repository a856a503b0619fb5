#include "device_agent/adapter_download.h"

#include "base/status_macros.h"
#include "delivery/adapter_files.h"
#include "delivery/blob_service.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "proto/grpc_status.h"

namespace edgesplit {

absl::Status DownloadAdapter(const std::shared_ptr<grpc::Channel>& controller,
                             const std::string& device,
                             const std::string& model_id,
                             const std::string& name,
                             const std::string& adapter_dir,
                             absl::Duration timeout) {
  auto registry = v1::AdapterRegistry::NewStub(controller);
  v1::ResolveAdapterRequest req;
  req.set_model_id(model_id);
  req.set_name(name);
  req.set_node(device);
  v1::ResolveAdapterResponse resolved;
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + timeout));
  ES_RETURN_IF_ERROR(FromGrpcStatus(
      registry->ResolveAdapter(&ctx, req, &resolved), "controller"));
  if (resolved.adapter().name() != name ||
      resolved.adapter().model_id() != model_id) {
    return absl::DataLossError("the controller resolved another adapter");
  }
  ES_ASSIGN_OR_RETURN(auto store, BlobStore::Open(adapter_dir + "/.blobs"));
  FetchOptions fo;
  fo.chunk_timeout = timeout;
  BlobFetcher fetcher(store.get(), fo);
  GrpcBlobSource origin("controller", controller);
  BlobSource* sources[] = {&origin};
  AdapterFetchStats stats;
  return MaterializeFromSources(resolved.adapter(), sources, fetcher, *store,
                                adapter_dir, &stats);
}

}  // namespace edgesplit
