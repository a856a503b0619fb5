// The controller's registry of model copies (delivery/model_pack.h): a
// model's directory, e.g. a quantized copy for devices or a fully
// fine-tuned variant, registered by name as files made of content-addressed
// parts held in the same blob store as adapters' files, so parts copies
// share (unchanged tensors) are stored once and fetched once.
//
// Kept in <state_dir>/models.pb, rewritten after every change and read back
// (and re-validated) at start.
#ifndef EDGESPLIT_CONTROLLER_MODEL_COPIES_H_
#define EDGESPLIT_CONTROLLER_MODEL_COPIES_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "delivery/blob_store.h"
#include "edgesplit/v1/delivery.pb.h"

namespace edgesplit {

// Thread-safe. Reads parts from <state_dir>/blobs, where the adapter
// registry's PutBlob uploads them; without a state_dir every call is
// FAILED_PRECONDITION.
class ModelCopyRegistry {
 public:
  static absl::StatusOr<std::unique_ptr<ModelCopyRegistry>> Open(
      const std::string& state_dir);

  // Valid (ValidateModelCopy), every part uploaded with its size, and the
  // parts make each file's SHA-256 (read back once, here). Names are
  // immutable: the same copy again is OK, another under a registered name
  // ALREADY_EXISTS.
  absl::Status Register(const v1::ModelCopy& copy);
  absl::StatusOr<v1::ModelCopy> Find(const std::string& model_id,
                                     const std::string& name) const;
  // `node` now holds (`holds`) or no longer holds the files of registered
  // copy `name` of `model_id` (ReportHeld); NOT_FOUND for an unknown copy.
  // Saved with the copies, so a restarted controller still sends servers
  // to their peers.
  absl::Status SetHolder(const std::string& model_id, const std::string& name,
                         const std::string& node, bool holds);
  // The servers holding the copy (by name; none for an unknown copy).
  std::vector<std::string> Holders(const std::string& model_id,
                                   const std::string& name) const;
  // The model ids of copies one of whose parts is blob `id`.
  std::set<std::string> ModelsWithBlob(const std::string& id) const;
  // Entries of the saved file Open left out, one message each.
  const std::vector<std::string>& skipped() const { return skipped_; }

 private:
  ModelCopyRegistry() = default;
  absl::Status Enabled() const;
  // Valid, parts present with their sizes, and (with `hash`) files
  // hashing right.
  absl::Status Check(const v1::ModelCopy& copy, bool hash) const;
  void IndexLocked(const v1::ModelCopy& copy)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes the copies and their holders to path_.
  absl::Status SaveLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::string path_;  // models.pb
  std::unique_ptr<BlobStore> store_;
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, v1::ModelCopy> copies_
      ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, std::set<std::string>> holders_
      ABSL_GUARDED_BY(mu_);
  // Blob id -> model ids whose copies use it (devices' read checks).
  std::map<std::string, std::set<std::string>> by_blob_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> skipped_;  // Set by Open only.
};

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_MODEL_COPIES_H_
