#include "delivery/adapter_files.h"

#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "delivery/publish_dir.h"
#include "delivery/sha256.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "proto/grpc_status.h"
#include "runtime/adapter_name.h"

namespace edgesplit {

absl::StatusOr<v1::ResolveAdapterResponse> ResolveAdapter(
    const std::shared_ptr<grpc::Channel>& controller,
    const std::string& model_id, const std::string& name,
    const std::string& node, absl::Duration timeout) {
  auto registry = v1::AdapterRegistry::NewStub(controller);
  v1::ResolveAdapterRequest req;
  req.set_model_id(model_id);
  req.set_name(name);
  req.set_node(node);
  v1::ResolveAdapterResponse resolved;
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + timeout));
  ES_RETURN_IF_ERROR(FromGrpcStatus(
      registry->ResolveAdapter(&ctx, req, &resolved), "controller"));
  if (resolved.adapter().name() != name ||
      resolved.adapter().model_id() != model_id) {
    return absl::DataLossError(absl::StrCat(
        "the controller resolved ", model_id, "/", name, " to ",
        resolved.adapter().model_id(), "/", resolved.adapter().name()));
  }
  return resolved;
}

absl::StatusOr<std::string> FetchedAdaptersDir(const std::string& adapter_dir,
                                               const std::string& model_id) {
  if (model_id.empty()) {
    return absl::InvalidArgumentError(
        "an empty model id cannot name an adapter directory");
  }
  bool safe = model_id.size() <= 128 && model_id[0] != '.';
  for (char c : model_id) {
    safe = safe && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-');
  }
  if (safe) return absl::StrCat(adapter_dir, "/.cluster/", model_id);
  // Any other id ("org/model", long ones) by its hash: '%' never starts a
  // safe id, so the two kinds never meet.
  Sha256 h;
  h.Update(model_id);
  return absl::StrCat(adapter_dir, "/.cluster/%", h.Hex());
}

absl::StatusOr<std::string> FindAdapterDir(const std::string& adapter_dir,
                                           const std::string& model_id,
                                           const std::string& name) {
  std::error_code ec;
  if (!model_id.empty()) {  // No model (tests of a bare stage): no fetches.
    ES_ASSIGN_OR_RETURN(std::string fetched,
                        FetchedAdaptersDir(adapter_dir, model_id));
    if (std::filesystem::is_directory(fetched + "/" + name, ec)) {
      return fetched + "/" + name;
    }
  }
  const std::string placed = adapter_dir + "/" + name;
  return std::filesystem::is_directory(placed, ec) ? placed : std::string();
}

absl::Status MaterializeFromSources(const v1::RegisteredAdapter& adapter,
                                    absl::Span<BlobSource* const> sources,
                                    BlobFetcher& fetcher, BlobStore& store,
                                    const std::string& dir,
                                    AdapterFetchStats* stats) {
  const std::string& name = adapter.name();
  ES_RETURN_IF_ERROR(ValidateAdapterName(name));  // It names a directory.
  // Fetch every file first, then write the directory: a reader never sees
  // half an adapter.
  std::vector<std::pair<std::string, std::string>> files;  // name, bytes
  for (const v1::AdapterFile& f : adapter.files()) {
    if (f.name() != kAdapterFiles[0] && f.name() != kAdapterFiles[1]) {
      return absl::DataLossError(
          absl::StrCat("adapter ", name, ": unexpected file ", f.name()));
    }
    for (const auto& [have, unused] : files) {
      if (have == f.name()) {
        return absl::DataLossError(
            absl::StrCat("adapter ", name, ": file ", have, " twice"));
      }
    }
    ES_ASSIGN_OR_RETURN(FetchResult got,
                        fetcher.Fetch(f.blob(), sources, f.bytes()));
    stats->bytes_received += got.bytes_received;
    if (!got.source.empty()) ++stats->blobs_from[got.source];
    ES_ASSIGN_OR_RETURN(std::string bytes, store.ReadVerified(f.blob()));
    files.emplace_back(f.name(), std::move(bytes));
  }
  // Written beside it and renamed into place (no adapter name starts with
  // '.'), so the directory holds both files or does not exist.
  const std::string target = dir + "/" + name;
  if (files.size() != 2) {
    return absl::DataLossError(
        absl::StrCat("adapter ", name, " has ", files.size(), " files, not 2"));
  }
  ES_RETURN_IF_ERROR(PublishDirectory(target, [&](const std::string& staging) {
    for (const auto& [file, bytes] : files) {
      ES_RETURN_IF_ERROR(WriteFileAtomically(staging + "/" + file, bytes));
    }
    return absl::OkStatus();
  }));
  ++stats->adapters;
  return absl::OkStatus();
}

}  // namespace edgesplit
