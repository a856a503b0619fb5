#include "controller/model_copies.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "delivery/model_pack.h"
#include "delivery/sha256.h"

namespace edgesplit {

absl::StatusOr<std::unique_ptr<ModelCopyRegistry>> ModelCopyRegistry::Open(
    const std::string& state_dir) {
  auto r = std::unique_ptr<ModelCopyRegistry>(new ModelCopyRegistry());
  if (state_dir.empty()) return r;
  ES_ASSIGN_OR_RETURN(r->store_, BlobStore::Open(state_dir + "/blobs"));
  r->path_ = state_dir + "/models.pb";
  std::error_code ec;
  if (!std::filesystem::exists(r->path_, ec)) return r;
  ES_ASSIGN_OR_RETURN(std::string bytes, ReadFile(r->path_));
  v1::ModelCopies saved;
  if (!saved.ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat(r->path_, ": not a registry"));
  }
  absl::MutexLock lock(&r->mu_);
  for (const v1::ModelCopy& c : saved.copies()) {
    // Sizes only: the files were hashed when registered (and every reader
    // checks parts and files again), so a start does not read every copy.
    if (absl::Status s = r->Check(c, /*hash=*/false); !s.ok()) {
      // One copy whose parts went missing must not stop the controller.
      r->skipped_.push_back(absl::StrCat(r->path_, ": ", s.message()));
      continue;
    }
    r->copies_[{c.model_id(), c.name()}] = c;
    r->IndexLocked(c);
  }
  for (const v1::ModelCopyHolders& h : saved.holders()) {
    // Holders of a copy left out above are forgotten with it.
    if (r->copies_.count({h.model_id(), h.name()}) == 0) continue;
    r->holders_[{h.model_id(), h.name()}].insert(h.nodes().begin(),
                                                 h.nodes().end());
  }
  return r;
}

absl::Status ModelCopyRegistry::Enabled() const {
  if (store_ != nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "this controller has no state_dir: it keeps no model copies");
}

absl::Status ModelCopyRegistry::Check(const v1::ModelCopy& copy,
                                      bool hash) const {
  ES_RETURN_IF_ERROR(ValidateModelCopy(copy));
  for (const v1::ModelFile& f : copy.files()) {
    for (const v1::BlobPart& p : f.parts()) {
      auto size = store_->Size(p.blob());
      if (!size.ok() || *size != p.bytes()) {
        return absl::FailedPreconditionError(
            absl::StrCat("model copy ", copy.model_id(), "/", copy.name(),
                         ": part ", p.blob(), " of ", f.path(),
                         " is not uploaded with ", p.bytes(), " bytes"));
      }
    }
    if (!hash) continue;
    // Streamed: a part may be gigabytes.
    Sha256 whole;
    for (const v1::BlobPart& p : f.parts()) {
      ES_RETURN_IF_ERROR(
          StreamBlob(*store_, p.blob(), p.bytes(),
                     [&](absl::string_view piece) { whole.Update(piece); }));
    }
    if (whole.Hex() != f.sha256()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model copy ", copy.model_id(), "/", copy.name(), ": ",
                       f.path(), "'s parts do not hash to its sha256"));
    }
  }
  return absl::OkStatus();
}

void ModelCopyRegistry::IndexLocked(const v1::ModelCopy& copy) {
  for (const v1::ModelFile& f : copy.files()) {
    for (const v1::BlobPart& p : f.parts()) {
      by_blob_[p.blob()].insert(copy.model_id());
    }
  }
}

absl::Status ModelCopyRegistry::Register(const v1::ModelCopy& copy) {
  ES_RETURN_IF_ERROR(Enabled());
  auto known = [&]() -> absl::StatusOr<bool> {
    absl::MutexLock lock(&mu_);
    auto it = copies_.find({copy.model_id(), copy.name()});
    if (it == copies_.end()) return false;
    if (it->second.SerializeAsString() == copy.SerializeAsString()) {
      return true;
    }
    return absl::AlreadyExistsError(absl::StrCat(
        "model copy \"", copy.name(), "\" of model ", copy.model_id(),
        " is registered with other files; register it under a new name"));
  };
  ES_ASSIGN_OR_RETURN(bool registered, known());
  if (registered) return absl::OkStatus();
  // Reads every part once, outside the lock (lookups go on meanwhile).
  ES_RETURN_IF_ERROR(Check(copy, /*hash=*/true));
  absl::MutexLock lock(&mu_);
  if (copies_.count({copy.model_id(), copy.name()}) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("model copy \"", copy.name(), "\" of model ",
                     copy.model_id(), " was registered meanwhile"));
  }
  copies_[{copy.model_id(), copy.name()}] = copy;
  if (absl::Status s = SaveLocked(); !s.ok()) {
    copies_.erase({copy.model_id(), copy.name()});
    return s;
  }
  IndexLocked(copy);
  return absl::OkStatus();
}

absl::Status ModelCopyRegistry::SaveLocked() const {
  v1::ModelCopies all;
  for (const auto& [key, c] : copies_) *all.add_copies() = c;
  for (const auto& [key, nodes] : holders_) {
    v1::ModelCopyHolders* h = all.add_holders();
    h->set_model_id(key.first);
    h->set_name(key.second);
    for (const std::string& n : nodes) h->add_nodes(n);
  }
  return WriteFileAtomically(path_, all.SerializeAsString(), 0600);
}

absl::Status ModelCopyRegistry::SetHolder(const std::string& model_id,
                                          const std::string& name,
                                          const std::string& node, bool holds) {
  ES_RETURN_IF_ERROR(Enabled());
  absl::MutexLock lock(&mu_);
  const std::pair<std::string, std::string> key(model_id, name);
  if (copies_.count(key) == 0) {
    return absl::NotFoundError(absl::StrCat(
        "model copy \"", name, "\" of model ", model_id, " is not registered"));
  }
  std::set<std::string>& nodes = holders_[key];
  const bool changed =
      holds ? nodes.insert(node).second : nodes.erase(node) > 0;
  if (nodes.empty()) holders_.erase(key);
  // Holders are a hint (a lost one means a fetch from the controller):
  // kept in memory even if the save fails.
  return changed ? SaveLocked() : absl::OkStatus();
}

std::vector<std::string> ModelCopyRegistry::Holders(
    const std::string& model_id, const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = holders_.find({model_id, name});
  if (it == holders_.end()) return {};
  return std::vector<std::string>(it->second.begin(), it->second.end());
}

absl::StatusOr<v1::ModelCopy> ModelCopyRegistry::Find(
    const std::string& model_id, const std::string& name) const {
  ES_RETURN_IF_ERROR(Enabled());
  absl::MutexLock lock(&mu_);
  auto it = copies_.find({model_id, name});
  if (it == copies_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "model copy \"", name, "\" of model ", model_id, " is not registered"));
  }
  return it->second;
}

std::set<std::string> ModelCopyRegistry::ModelsWithBlob(
    const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = by_blob_.find(id);
  return it == by_blob_.end() ? std::set<std::string>() : it->second;
}

}  // namespace edgesplit
