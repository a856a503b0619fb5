#include "device_agent/cli/adapter_commands.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "controller/adapter_registry.h"
#include "delivery/blob_service.h"
#include "delivery/blob_store.h"
#include "delivery/model_pack.h"
#include "device_agent/cli/security_commands.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "proto/grpc_status.h"
#include "runtime/adapter_name.h"
#include "security/tls.h"

namespace edgesplit {
namespace cli {
namespace {

constexpr int64_t kChunk = int64_t{1} << 20;

// The controller's channel, as the admin (or with --device NAME, as that
// device).
absl::StatusOr<std::shared_ptr<grpc::Channel>> ControllerChannel(
    const Args& a, std::string* address) {
  ES_ASSIGN_OR_RETURN(*address, a.RequiredString("controller"));
  TlsConfig tls;
  if (a.Has("device")) {
    DeviceAgentOptions o;
    ES_RETURN_IF_ERROR(ApplyTlsFlags(a, a.String("device"), &o));
    tls.ca_file = o.tls.ca_file;
    tls.cert_file = o.tls.cert_file;
    tls.key_file = o.tls.key_file;
    tls.token_file = o.tls.token_file;
    tls.insecure = o.insecure;
  } else {
    ES_ASSIGN_OR_RETURN(tls, AdminTlsConfig(a));
  }
  ES_ASSIGN_OR_RETURN(std::shared_ptr<const TransportSecurity> security,
                      TransportSecurity::Create(tls));
  return security->Dial(*address, ControllerIdentity(security->cluster()));
}

absl::StatusOr<std::unique_ptr<v1::AdapterRegistry::Stub>> Registry(
    const Args& a, std::string* address) {
  ES_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      ControllerChannel(a, address));
  return v1::AdapterRegistry::NewStub(channel);
}

// Sends `bytes` as blob `id` in chunks, resuming at what the controller
// already holds (it answers a chunk at another offset with its size).
absl::Status Upload(v1::AdapterRegistry::Stub& stub, const std::string& id,
                    absl::string_view bytes, const std::string& controller) {
  const int64_t size = static_cast<int64_t>(bytes.size());
  int64_t offset = 0;
  for (int calls = 0;; ++calls) {
    if (calls > 2 * (size / kChunk + 2)) {
      return absl::AbortedError(absl::StrCat("controller ", controller,
                                             ": the upload of ", id,
                                             " makes no progress"));
    }
    v1::PutBlobRequest chunk;
    chunk.set_id(id);
    chunk.set_offset(offset);
    const int64_t n =
        std::min<int64_t>(kChunk, static_cast<int64_t>(bytes.size()) - offset);
    chunk.set_data(std::string(bytes.substr(offset, n)));
    chunk.set_last(offset + n == static_cast<int64_t>(bytes.size()));
    v1::PutBlobResponse r;
    grpc::ClientContext ctx;
    ctx.set_deadline(ToChrono(absl::Now() + absl::Seconds(30)));
    ES_RETURN_IF_ERROR(FromGrpcStatus(stub.PutBlob(&ctx, chunk, &r),
                                      "controller " + controller));
    if (r.stored()) return absl::OkStatus();
    if (r.received() < 0 || r.received() > size) {
      return absl::DataLossError(
          absl::StrCat("controller ", controller, " holds ", r.received(),
                       " bytes of ", id, ", which has ", size));
    }
    offset = r.received();
  }
}

}  // namespace

absl::Status AdapterRegisterCommand(const Args& a, std::ostream& out) {
  ES_ASSIGN_OR_RETURN(std::string model_id, a.RequiredString("model-id"));
  ES_ASSIGN_OR_RETURN(std::string name, a.RequiredString("name"));
  ES_ASSIGN_OR_RETURN(std::string dir, a.RequiredString("dir"));
  ES_RETURN_IF_ERROR(ValidateAdapterName(name));
  std::string controller;
  ES_ASSIGN_OR_RETURN(auto stub, Registry(a, &controller));
  v1::RegisterAdapterRequest req;
  v1::RegisteredAdapter* adapter = req.mutable_adapter();
  adapter->set_model_id(model_id);
  adapter->set_name(name);
  int64_t total = 0;
  for (const char* file : kAdapterFiles) {
    ES_ASSIGN_OR_RETURN(std::string bytes, ReadFile(dir + "/" + file));
    const std::string id = Sha256Hex(bytes);
    ES_RETURN_IF_ERROR(Upload(*stub, id, bytes, controller));
    v1::AdapterFile* f = adapter->add_files();
    f->set_name(file);
    f->set_blob(id);
    f->set_bytes(static_cast<int64_t>(bytes.size()));
    total += f->bytes();
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + absl::Seconds(10)));
  v1::RegisterAdapterResponse r;
  ES_RETURN_IF_ERROR(FromGrpcStatus(stub->RegisterAdapter(&ctx, req, &r),
                                    "controller " + controller));
  out << "adapter " << name << " of " << model_id << " registered (" << total
      << " bytes)\n";
  return absl::OkStatus();
}

absl::Status AdapterListCommand(const Args& a, std::ostream& out) {
  std::string controller;
  ES_ASSIGN_OR_RETURN(auto stub, Registry(a, &controller));
  v1::ListAdaptersRequest req;
  req.set_model_id(a.String("model-id", ""));
  v1::ListAdaptersResponse r;
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + absl::Seconds(10)));
  ES_RETURN_IF_ERROR(FromGrpcStatus(stub->ListAdapters(&ctx, req, &r),
                                    "controller " + controller));
  out << absl::StrFormat("%-16s %-20s %10s  %-14s %s\n", "model", "adapter",
                         "bytes", "sha256", "held by");
  for (const v1::RegisteredAdapter& ad : r.adapters()) {
    int64_t bytes = 0;
    std::string weights;
    for (const v1::AdapterFile& f : ad.files()) {
      bytes += f.bytes();
      if (f.name() == kAdapterFiles[1]) weights = f.blob().substr(0, 12);
    }
    out << absl::StrFormat(
        "%-16s %-20s %10d  %-14s %s\n", ad.model_id(), ad.name(), bytes,
        weights, ad.holders().empty() ? "-" : absl::StrJoin(ad.holders(), ","));
  }
  return absl::OkStatus();
}

absl::Status ModelRegisterCommand(const Args& a, std::ostream& out) {
  ES_ASSIGN_OR_RETURN(std::string model_id, a.RequiredString("model-id"));
  ES_ASSIGN_OR_RETURN(std::string name, a.RequiredString("name"));
  ES_ASSIGN_OR_RETURN(std::string dir, a.RequiredString("dir"));
  ES_ASSIGN_OR_RETURN(PackedModel packed, PackModelDir(dir, model_id, name));
  std::string controller;
  ES_ASSIGN_OR_RETURN(auto stub, Registry(a, &controller));
  int64_t total = 0;
  for (const auto& [id, bytes] : packed.parts) {
    ES_RETURN_IF_ERROR(Upload(*stub, id, bytes, controller));
    total += static_cast<int64_t>(bytes.size());
  }
  v1::RegisterModelCopyRequest req;
  *req.mutable_copy() = packed.copy;
  grpc::ClientContext ctx;
  // The controller reads every part back before answering.
  ctx.set_deadline(ToChrono(absl::Now() + absl::Minutes(10)));
  v1::RegisterModelCopyResponse r;
  ES_RETURN_IF_ERROR(FromGrpcStatus(stub->RegisterModelCopy(&ctx, req, &r),
                                    "controller " + controller));
  out << "model copy " << name << " of " << model_id << " registered ("
      << packed.copy.files_size() << " files, " << packed.parts.size()
      << " distinct parts, " << total << " bytes)\n";
  return absl::OkStatus();
}

absl::Status ModelFetchCommand(const Args& a, std::ostream& out) {
  ES_ASSIGN_OR_RETURN(std::string model_id, a.RequiredString("model-id"));
  ES_ASSIGN_OR_RETURN(std::string name, a.RequiredString("name"));
  ES_ASSIGN_OR_RETURN(std::string out_dir, a.RequiredString("out"));
  std::error_code ec;
  std::string trimmed = out_dir;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const std::filesystem::path target =
      std::filesystem::absolute(trimmed, ec).lexically_normal();
  // Beside the copies, so a second copy of the model reuses the parts it
  // shares with the first.
  const std::string blob_dir = a.String(
      "blob-dir", (target.parent_path() / ".edgesplit-blobs").string());
  std::string controller;
  ES_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                      ControllerChannel(a, &controller));
  ES_ASSIGN_OR_RETURN(
      v1::ResolveModelCopyResponse resolved,
      ResolveModelCopy(channel, model_id, name, "", absl::Seconds(10)));
  const v1::ModelCopy copy = ToModelCopy(resolved);
  ES_ASSIGN_OR_RETURN(std::unique_ptr<BlobStore> store,
                      BlobStore::Open(blob_dir));
  BlobFetcher fetcher(store.get());
  GrpcBlobSource source("controller", channel);
  BlobSource* sources[] = {&source};
  ModelFetchStats stats;
  ES_RETURN_IF_ERROR(
      MaterializeModelCopy(copy, sources, fetcher, *store, out_dir, &stats));
  out << "model copy " << name << " of " << model_id << " written to "
      << out_dir << ": " << stats.parts_fetched << " parts fetched ("
      << stats.bytes_received << " bytes), " << stats.parts_held
      << " already held\n";
  return absl::OkStatus();
}

void PrintAdapterPlacement(const v1::AdapterPlacement& p, std::ostream& out) {
  out << absl::StrFormat(
      "adapter placement: hit ratio %.3f (held now %.3f), %d bytes to "
      "move%s\n",
      p.hit_ratio(), p.held_hit_ratio(), p.moved_bytes(),
      p.exact() ? ", optimal" : "");
  out << absl::StrFormat("  %-14s %12s %12s %12s  %s\n", "server", "stored",
                         "apart", "capacity", "adapters");
  for (const v1::ServerPlacement& s : p.servers()) {
    std::vector<std::string> names;
    for (const v1::PlacedAdapter& a : s.adapters()) {
      names.push_back(a.model_id() + ":" + a.name());
    }
    out << absl::StrFormat("  %-14s %12d %12d %12d  %s\n", s.node(),
                           s.stored_bytes(), s.independent_bytes(),
                           s.capacity_bytes(),
                           names.empty() ? "-" : absl::StrJoin(names, ","));
  }
  for (const v1::AdapterRequests& d : p.demand()) {
    out << absl::StrFormat("  demand %s:%s %.2f\n", d.model_id(), d.name(),
                           d.requests());
  }
}

absl::Status AdapterPlacementCommand(const Args& a, std::ostream& out) {
  std::string controller;
  ES_ASSIGN_OR_RETURN(auto stub, Registry(a, &controller));
  v1::AdapterPlacement placement;
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + absl::Seconds(10)));
  ES_RETURN_IF_ERROR(FromGrpcStatus(
      stub->GetPlacement(&ctx, v1::GetPlacementRequest(), &placement),
      "controller " + controller));
  PrintAdapterPlacement(placement, out);
  return absl::OkStatus();
}

}  // namespace cli
}  // namespace edgesplit
