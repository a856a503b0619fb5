#include "controller/adapter_registry.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "runtime/adapter_name.h"

namespace edgesplit {

absl::StatusOr<std::unique_ptr<AdapterRegistry>> AdapterRegistry::Open(
    const std::string& state_dir) {
  auto r = std::unique_ptr<AdapterRegistry>(new AdapterRegistry());
  if (state_dir.empty()) return r;
  ES_ASSIGN_OR_RETURN(r->store_, BlobStore::Open(state_dir + "/blobs"));
  r->path_ = state_dir + "/adapters.pb";
  std::error_code ec;
  if (!std::filesystem::exists(r->path_, ec)) return r;
  ES_ASSIGN_OR_RETURN(std::string bytes, ReadFile(r->path_));
  v1::ListAdaptersResponse saved;
  if (!saved.ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat(r->path_, ": not a registry"));
  }
  absl::MutexLock lock(&r->mu_);
  for (const v1::RegisteredAdapter& a : saved.adapters()) {
    if (absl::Status s = r->CheckLocked(a); !s.ok()) {
      // One adapter whose blobs went missing must not keep the controller
      // from starting: it is left out (and reported).
      r->skipped_.push_back(absl::StrCat(r->path_, ": ", s.message()));
      continue;
    }
    r->adapters_[{a.model_id(), a.name()}] = a;
  }
  return r;
}

absl::Status AdapterRegistry::Enabled() const {
  if (store_ != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "this controller has no state_dir: it keeps no adapters");
}

absl::StatusOr<v1::PutBlobResponse> AdapterRegistry::PutBlob(
    const v1::PutBlobRequest& chunk) {
  ES_RETURN_IF_ERROR(Enabled());
  ES_RETURN_IF_ERROR(ValidateBlobId(chunk.id()));
  v1::PutBlobResponse response;
  if (store_->Has(chunk.id())) {
    response.set_stored(true);
    return response;
  }
  absl::MutexLock lock(&mu_);  // One writer per partial file.
  const int64_t have = store_->PartialSize(chunk.id());
  if (chunk.offset() != have) {
    // Not where the upload stands (a client resuming, or a stale retry):
    // nothing appended; the client continues from `received`.
    response.set_received(have);
    return response;
  }
  ES_RETURN_IF_ERROR(
      store_->AppendPartial(chunk.id(), chunk.offset(), chunk.data()));
  response.set_received(store_->PartialSize(chunk.id()));
  if (chunk.last()) {
    ES_RETURN_IF_ERROR(store_->CommitPartial(chunk.id()));
    response.set_stored(true);
  }
  return response;
}

absl::Status AdapterRegistry::CheckLocked(
    const v1::RegisteredAdapter& a) const {
  if (a.model_id().empty()) {
    return absl::InvalidArgumentError("adapter: field \"model_id\" is empty");
  }
  ES_RETURN_IF_ERROR(ValidateAdapterName(a.name()));
  if (a.files_size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adapter ", a.name(), ": expected the files ", kAdapterFiles[0],
        " and ", kAdapterFiles[1], ", got ", a.files_size(), " files"));
  }
  for (const char* want : kAdapterFiles) {
    auto f = std::find_if(
        a.files().begin(), a.files().end(),
        [&](const v1::AdapterFile& f) { return f.name() == want; });
    if (f == a.files().end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter ", a.name(), ": no file ", want));
    }
    ES_RETURN_IF_ERROR(ValidateBlobId(f->blob()));
    auto size = store_->Size(f->blob());
    if (!size.ok() || *size != f->bytes()) {
      return absl::FailedPreconditionError(
          absl::StrCat("adapter ", a.name(), ": ", want, " (blob ", f->blob(),
                       ", ", f->bytes(), " bytes) is not uploaded"));
    }
  }
  return absl::OkStatus();
}

absl::Status AdapterRegistry::Register(const v1::RegisteredAdapter& adapter) {
  ES_RETURN_IF_ERROR(Enabled());
  absl::MutexLock lock(&mu_);
  ES_RETURN_IF_ERROR(CheckLocked(adapter));
  v1::RegisteredAdapter a = adapter;
  a.clear_holders();
  auto it = adapters_.find({a.model_id(), a.name()});
  if (it != adapters_.end()) {
    // Names are immutable: servers and devices keep what they fetched by
    // name, so new content under an old name would mix versions along one
    // route. The same files again are fine.
    v1::RegisteredAdapter same = it->second;
    same.clear_holders();
    if (same.SerializeAsString() == a.SerializeAsString()) {
      return absl::OkStatus();
    }
    return absl::AlreadyExistsError(absl::StrCat(
        "adapter \"", a.name(), "\" of model ", a.model_id(),
        " is registered with other files; register the new version under a "
        "new name"));
  }
  auto next = adapters_;
  next[{a.model_id(), a.name()}] = std::move(a);
  ES_RETURN_IF_ERROR(SaveLocked(next));
  adapters_ = std::move(next);
  return absl::OkStatus();
}

std::vector<std::pair<std::string, std::string>>
AdapterRegistry::AdaptersWithBlob(const std::string& id) const {
  std::vector<std::pair<std::string, std::string>> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [key, a] : adapters_) {
    for (const v1::AdapterFile& f : a.files()) {
      if (f.blob() == id) {
        out.push_back(key);
        break;
      }
    }
  }
  return out;
}

v1::ListAdaptersResponse AdapterRegistry::List(
    const std::string& model_id) const {
  v1::ListAdaptersResponse out;
  absl::MutexLock lock(&mu_);
  for (const auto& [key, a] : adapters_) {
    if (model_id.empty() || key.first == model_id) *out.add_adapters() = a;
  }
  return out;
}

absl::StatusOr<v1::RegisteredAdapter*> AdapterRegistry::FindLocked(
    const std::string& model_id, const std::string& name) {
  auto it = adapters_.find({model_id, name});
  if (it == adapters_.end()) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" of model ",
                                            model_id, " is not registered"));
  }
  return &it->second;
}

absl::StatusOr<v1::RegisteredAdapter> AdapterRegistry::Find(
    const std::string& model_id, const std::string& name) {
  ES_RETURN_IF_ERROR(Enabled());
  absl::MutexLock lock(&mu_);
  ES_ASSIGN_OR_RETURN(v1::RegisteredAdapter * a, FindLocked(model_id, name));
  return *a;
}

absl::Status AdapterRegistry::AddHolder(const std::string& model_id,
                                        const std::string& name,
                                        const std::string& node) {
  ES_RETURN_IF_ERROR(Enabled());
  absl::MutexLock lock(&mu_);
  ES_ASSIGN_OR_RETURN(v1::RegisteredAdapter * a, FindLocked(model_id, name));
  const auto& holders = a->holders();
  if (std::find(holders.begin(), holders.end(), node) != holders.end()) {
    return absl::OkStatus();
  }
  // Holders are a hint (a lost one means a fetch from the controller):
  // kept in memory even if the save fails.
  a->add_holders(node);
  return SaveLocked(adapters_);
}

absl::Status AdapterRegistry::RemoveHolder(const std::string& model_id,
                                           const std::string& name,
                                           const std::string& node) {
  ES_RETURN_IF_ERROR(Enabled());
  absl::MutexLock lock(&mu_);
  ES_ASSIGN_OR_RETURN(v1::RegisteredAdapter * a, FindLocked(model_id, name));
  auto* holders = a->mutable_holders();
  auto it = std::find(holders->begin(), holders->end(), node);
  if (it == holders->end()) return absl::OkStatus();
  holders->erase(it);
  return SaveLocked(adapters_);
}

absl::Status AdapterRegistry::SaveLocked(const Adapters& adapters) const {
  v1::ListAdaptersResponse all;
  for (const auto& [key, a] : adapters) *all.add_adapters() = a;
  return WriteFileAtomically(path_, all.SerializeAsString(), 0600);
}

}  // namespace edgesplit
