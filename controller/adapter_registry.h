// The controller's registry of LoRA adapters: which adapters of which model
// exist, by name and by the SHA-256 of their files, and which servers hold
// copies. An operator uploads an adapter's files (blobs) and registers it
// (`edgesplit adapter register`); a server missing an adapter resolves it
// here and fetches its files from the nearest peer holding them, or from
// the controller's own store, then reports that it holds them.
//
// Blobs live in <state_dir>/blobs (delivery/blob_store.h), the registry in
// <state_dir>/adapters.pb, rewritten after every change and read back (and
// re-validated) at start. Without a state_dir the registry is off: every
// call is FAILED_PRECONDITION.
#ifndef EDGESPLIT_CONTROLLER_ADAPTER_REGISTRY_H_
#define EDGESPLIT_CONTROLLER_ADAPTER_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "delivery/adapter_files.h"
#include "delivery/blob_store.h"
#include "edgesplit/v1/delivery.pb.h"

namespace edgesplit {

// Thread-safe.
class AdapterRegistry {
 public:
  static absl::StatusOr<std::unique_ptr<AdapterRegistry>> Open(
      const std::string& state_dir);

  // A chunk of an upload; see AdapterRegistry.PutBlob in delivery.proto.
  absl::StatusOr<v1::PutBlobResponse> PutBlob(const v1::PutBlobRequest& chunk);
  // Names valid, exactly the two PEFT files, each blob stored with its
  // size. Names are immutable: the same files again are OK, other files
  // under a registered name ALREADY_EXISTS (servers and devices keep what
  // they fetched by name; a new version takes a new name).
  absl::Status Register(const v1::RegisteredAdapter& adapter);
  // The (model, name) of every adapter one of whose files is blob `id`.
  std::vector<std::pair<std::string, std::string>> AdaptersWithBlob(
      const std::string& id) const;
  // Entries of the saved registry Open left out (their blobs are missing
  // or changed), one message each, for the daemon's log.
  const std::vector<std::string>& skipped() const { return skipped_; }
  v1::ListAdaptersResponse List(const std::string& model_id) const;
  absl::StatusOr<v1::RegisteredAdapter> Find(const std::string& model_id,
                                             const std::string& name);
  // `node` holds the files of the registered adapter.
  absl::Status AddHolder(const std::string& model_id, const std::string& name,
                         const std::string& node);
  // `node` evicted the adapter's files: peers are no longer sent there.
  absl::Status RemoveHolder(const std::string& model_id,
                            const std::string& name, const std::string& node);

  const BlobStore* store() const { return store_.get(); }
  bool enabled() const { return store_ != nullptr; }

 private:
  AdapterRegistry() = default;
  absl::Status Enabled() const;
  using Adapters =
      std::map<std::pair<std::string, std::string>, v1::RegisteredAdapter>;
  // Writes `adapters` (the registry as it is to be) to path_.
  absl::Status SaveLocked(const Adapters& adapters) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckLocked(const v1::RegisteredAdapter& adapter) const;
  absl::StatusOr<v1::RegisteredAdapter*> FindLocked(const std::string& model_id,
                                                    const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::string path_;  // adapters.pb
  std::unique_ptr<BlobStore> store_;
  mutable absl::Mutex mu_;
  Adapters adapters_ ABSL_GUARDED_BY(mu_);  // By (model, name).
  std::vector<std::string> skipped_;        // Set by Open only.
};

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_ADAPTER_REGISTRY_H_
