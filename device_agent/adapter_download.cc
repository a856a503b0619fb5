#include "device_agent/adapter_download.h"

#include "base/status_macros.h"
#include "delivery/adapter_files.h"
#include "delivery/blob_service.h"

namespace edgesplit {

absl::Status DownloadAdapter(const std::shared_ptr<grpc::Channel>& controller,
                             const std::string& device,
                             const std::string& model_id,
                             const std::string& name,
                             const std::string& adapter_dir,
                             const std::string& into, absl::Duration timeout) {
  ES_ASSIGN_OR_RETURN(
      v1::ResolveAdapterResponse resolved,
      ResolveAdapter(controller, model_id, name, device, timeout));
  ES_ASSIGN_OR_RETURN(auto store, BlobStore::Open(adapter_dir + "/.blobs"));
  FetchOptions fo;
  fo.chunk_timeout = timeout;
  BlobFetcher fetcher(store.get(), fo);
  GrpcBlobSource origin("controller", controller);
  BlobSource* sources[] = {&origin};
  AdapterFetchStats stats;
  return MaterializeFromSources(resolved.adapter(), sources, fetcher, *store,
                                into, &stats);
}

}  // namespace edgesplit
