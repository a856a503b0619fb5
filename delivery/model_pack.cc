#include "delivery/model_pack.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "delivery/adapter_files.h"
#include "delivery/publish_dir.h"
#include "delivery/sha256.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "proto/grpc_status.h"
#include "runtime/adapter_name.h"
#include "runtime/safetensors.h"

namespace edgesplit {

namespace fs = std::filesystem;

std::vector<absl::string_view> SplitModelFile(const std::string& path,
                                              absl::string_view bytes) {
  const std::vector<absl::string_view> whole = {bytes};
  if (!absl::EndsWith(path, ".safetensors") || bytes.size() < 8) return whole;
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);  // Little-endian, as the format says.
  if (n > kMaxSafetensorsHeaderBytes || n > bytes.size() - 8) return whole;
  const uint64_t data_start = 8 + n;
  auto header = ParseSafetensorsHeader(bytes.substr(8, n),
                                       bytes.size() - data_start, path);
  if (!header.ok()) return whole;  // Not ours to judge: sent as it is.
  std::vector<const TensorInfo*> tensors;
  for (const TensorInfo& t : header->tensors) tensors.push_back(&t);
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorInfo* a, const TensorInfo* b) {
              return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
            });
  // Only a data section the tensors tile exactly is rebuilt from them.
  uint64_t at = 0;
  for (const TensorInfo* t : tensors) {
    if (t->begin != at) return whole;
    at = t->end;
  }
  if (at != bytes.size() - data_start) return whole;
  std::vector<absl::string_view> parts = {bytes.substr(0, data_start)};
  for (const TensorInfo* t : tensors) {
    if (t->nbytes() > 0) {
      parts.push_back(bytes.substr(data_start + t->begin, t->nbytes()));
    }
  }
  return parts;
}

absl::StatusOr<PackedModel> PackModelDir(const std::string& dir,
                                         const std::string& model_id,
                                         const std::string& name) {
  PackedModel packed;
  packed.copy.set_model_id(model_id);
  packed.copy.set_name(name);
  std::error_code ec;
  std::vector<std::string> paths;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string leaf = it->path().filename().string();
    if (!leaf.empty() && leaf[0] == '.') {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) {
      paths.push_back(fs::relative(it->path(), dir).generic_string());
    }
  }
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("cannot read ", dir, ": ", ec.message()));
  }
  std::sort(paths.begin(), paths.end());
  for (const std::string& path : paths) {
    ES_RETURN_IF_ERROR(ValidateModelFilePath(path));
    ES_ASSIGN_OR_RETURN(std::string bytes, ReadFile(dir + "/" + path));
    packed.contents.push_back(std::make_unique<std::string>(std::move(bytes)));
    const std::string& kept = *packed.contents.back();
    v1::ModelFile* file = packed.copy.add_files();
    file->set_path(path);
    file->set_sha256(Sha256Hex(kept));
    file->set_bytes(static_cast<int64_t>(kept.size()));
    for (absl::string_view part : SplitModelFile(path, kept)) {
      v1::BlobPart* p = file->add_parts();
      p->set_blob(Sha256Hex(part));
      p->set_bytes(static_cast<int64_t>(part.size()));
      packed.parts.emplace(p->blob(), part);
    }
  }
  ES_RETURN_IF_ERROR(ValidateModelCopy(packed.copy));
  return packed;
}

absl::Status ValidateModelFilePath(const std::string& path) {
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("model file path \"", path.substr(0, 200), "\" ", why));
  };
  if (path.empty() || path.size() > 512) return bad("is empty or too long");
  const std::vector<std::string> parts = absl::StrSplit(path, '/');
  if (parts.size() > 8) return bad("is more than 8 deep");
  for (const std::string& p : parts) {
    if (p.empty() || p[0] == '.') {
      return bad("has an empty or hidden component");
    }
    for (char c : p) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' &&
          c != '_' && c != '-') {
        return bad("has a character other than letters, digits, . _ -");
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateModelCopy(const v1::ModelCopy& copy) {
  ES_RETURN_IF_ERROR(ValidateAdapterName(copy.name()));
  if (copy.model_id().empty() || copy.model_id().size() > 256) {
    return absl::InvalidArgumentError("model copy: model_id empty or too long");
  }
  const std::string what =
      absl::StrCat("model copy ", copy.model_id(), "/", copy.name());
  if (copy.files_size() == 0 || copy.files_size() > kMaxModelFiles) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": ", copy.files_size(), " files (1 to ", kMaxModelFiles, ")"));
  }
  std::set<std::string> seen;
  for (const v1::ModelFile& f : copy.files()) {
    ES_RETURN_IF_ERROR(ValidateModelFilePath(f.path()));
    if (!seen.insert(f.path()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": file ", f.path(), " twice"));
    }
    ES_RETURN_IF_ERROR(ValidateBlobId(f.sha256()));
    if (f.parts_size() == 0 || f.parts_size() > kMaxPartsPerFile) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": file ", f.path(), " has ", f.parts_size(), " parts"));
    }
    int64_t sum = 0;
    for (const v1::BlobPart& p : f.parts()) {
      ES_RETURN_IF_ERROR(ValidateBlobId(p.blob()));
      if (p.bytes() < 0 || p.bytes() > kMaxPartBytes ||
          p.bytes() > (int64_t{1} << 50) - sum) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": file ", f.path(), ": a part of ", p.bytes(), " bytes"));
      }
      sum += p.bytes();
    }
    if (sum != f.bytes()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": file ", f.path(), " is ", f.bytes(),
                       " bytes but its parts add up to ", sum));
    }
  }
  return absl::OkStatus();
}

absl::Status StreamBlob(const BlobStore& store, const std::string& id,
                        int64_t bytes,
                        const std::function<void(absl::string_view)>& sink) {
  // The size first: a file longer than registered is never read whole.
  auto size = store.Size(id);
  absl::StatusOr<std::string> hash = size.ok() && *size == bytes
                                         ? Sha256OfFile(store.PathOf(id), sink)
                                         : absl::StatusOr<std::string>("");
  if (!hash.ok() || *hash != id) {
    return absl::DataLossError(absl::StrCat("blob ", id, " on disk is not the ",
                                            bytes, " bytes that hash to it"));
  }
  return absl::OkStatus();
}

namespace {

// Writes `file` below `root` from the store's parts, streamed (a part may
// be gigabytes), checking each part's and the whole file's hash.
absl::Status WriteModelFile(const v1::ModelFile& file, BlobStore& store,
                            const std::string& root) {
  const fs::path target = fs::path(root) / file.path();
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  std::ofstream out(target, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write ", target.string()));
  }
  Sha256 hash;
  for (const v1::BlobPart& p : file.parts()) {
    ES_RETURN_IF_ERROR(
        StreamBlob(store, p.blob(), p.bytes(), [&](absl::string_view piece) {
          hash.Update(piece);
          out.write(piece.data(), static_cast<std::streamsize>(piece.size()));
        }));
  }
  out.close();
  if (!out) {
    return absl::DataLossError(absl::StrCat("writing ", target.string()));
  }
  if (hash.Hex() != file.sha256()) {
    return absl::DataLossError(absl::StrCat(
        file.path(), ": its parts do not make the registered file"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MaterializeModelCopy(const v1::ModelCopy& copy,
                                  absl::Span<BlobSource* const> sources,
                                  BlobFetcher& fetcher, BlobStore& store,
                                  const std::string& out_dir,
                                  ModelFetchStats* stats) {
  ES_RETURN_IF_ERROR(ValidateModelCopy(copy));
  std::error_code ec;
  // "dir/" names dir (its staging goes beside it, not inside).
  std::string trimmed = out_dir;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const fs::path target =
      fs::absolute(fs::path(trimmed).lexically_normal(), ec);
  if (target.filename().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("bad output ", out_dir));
  }
  if (fs::exists(target, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(out_dir, " exists"));
  }
  std::set<std::string> done;
  for (const v1::ModelFile& f : copy.files()) {
    for (const v1::BlobPart& p : f.parts()) {
      if (!done.insert(p.blob()).second) continue;
      if (store.Has(p.blob())) {
        ++stats->parts_held;
        continue;
      }
      ES_ASSIGN_OR_RETURN(FetchResult got,
                          fetcher.Fetch(p.blob(), sources, p.bytes()));
      stats->bytes_received += got.bytes_received;
      ++stats->parts_fetched;
      if (!got.source.empty()) ++stats->parts_from[got.source];
    }
  }
  // A reader sees the whole copy or none.
  return PublishDirectory(target.string(), [&](const std::string& staging) {
    for (const v1::ModelFile& f : copy.files()) {
      ES_RETURN_IF_ERROR(WriteModelFile(f, store, staging));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::string> ModelCopyDir(const std::string& base,
                                         const std::string& model_id,
                                         const std::string& name) {
  ES_RETURN_IF_ERROR(ValidateAdapterName(name));
  ES_ASSIGN_OR_RETURN(std::string models, FetchedAdaptersDir(base, model_id));
  return absl::StrCat(models, "/", name);
}

v1::ModelCopy ToModelCopy(const v1::ResolveModelCopyResponse& resolved) {
  v1::ModelCopy copy;
  copy.set_model_id(resolved.model_id());
  copy.set_name(resolved.name());
  *copy.mutable_files() = resolved.files();
  return copy;
}

absl::StatusOr<v1::ResolveModelCopyResponse> ResolveModelCopy(
    const std::shared_ptr<grpc::Channel>& controller,
    const std::string& model_id, const std::string& name,
    const std::string& node, absl::Duration timeout) {
  auto registry = v1::AdapterRegistry::NewStub(controller);
  v1::ResolveModelCopyRequest req;
  req.set_model_id(model_id);
  req.set_name(name);
  req.set_node(node);
  v1::ResolveModelCopyResponse resolved;
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + timeout));
  ES_RETURN_IF_ERROR(FromGrpcStatus(
      registry->ResolveModelCopy(&ctx, req, &resolved), "controller"));
  const v1::ModelCopy copy = ToModelCopy(resolved);
  if (copy.model_id() != model_id || copy.name() != name) {
    return absl::DataLossError(absl::StrCat("the controller resolved ",
                                            model_id, "/", name, " to ",
                                            copy.model_id(), "/", copy.name()));
  }
  ES_RETURN_IF_ERROR(ValidateModelCopy(copy));
  return resolved;
}

}  // namespace edgesplit
