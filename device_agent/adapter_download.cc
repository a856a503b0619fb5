#include "device_agent/adapter_download.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "delivery/adapter_files.h"
#include "delivery/blob_service.h"
#include "delivery/model_pack.h"

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

absl::StatusOr<std::string> DownloadModelCopy(
    const std::shared_ptr<grpc::Channel>& controller,
    const std::string& model_id, const std::string& name,
    const std::string& cache_dir, absl::Duration timeout) {
  ES_ASSIGN_OR_RETURN(std::string dir, ModelCopyDir(cache_dir, model_id, name));
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) return dir;
  ES_ASSIGN_OR_RETURN(
      v1::ResolveModelCopyResponse resolved,
      ResolveModelCopy(controller, model_id, name, "", timeout));
  ES_ASSIGN_OR_RETURN(auto store, BlobStore::Open(cache_dir + "/.blobs"));
  FetchOptions fo;
  fo.chunk_timeout = timeout;
  BlobFetcher fetcher(store.get(), fo);
  GrpcBlobSource origin("controller", controller);
  BlobSource* sources[] = {&origin};
  ModelFetchStats stats;
  std::filesystem::create_directories(std::filesystem::path(dir).parent_path(),
                                      ec);
  absl::Status s = MaterializeModelCopy(ToModelCopy(resolved), sources, fetcher,
                                        *store, dir, &stats);
  // Another process (a second agent on this cache) wrote it first.
  if (!s.ok() && !absl::IsAlreadyExists(s)) return s;
  return dir;
}

}  // namespace edgesplit
