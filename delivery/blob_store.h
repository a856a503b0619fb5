// A content-addressed store of immutable files ("blobs") on local disk:
// each is named by the SHA-256 of its bytes (lowercase hex), so the same
// bytes are stored once however many models or adapters use them, and
// any copy can be checked against its name. Edge servers keep the
// adapters and model parts they cache here; the controller keeps the
// registered originals here; both serve them to peers (blob_service.h).
//
// Layout under the root: sha256/<hex> (complete, verified blobs) and
// partial/<hex> (a download in progress, resumable at its size).
//
// Thread-safe: blobs are written to a temporary name and renamed into
// place; a partial download belongs to one writer at a time (callers
// serialize downloads of the same blob, see BlobFetcher).
#ifndef EDGESPLIT_DELIVERY_BLOB_STORE_H_
#define EDGESPLIT_DELIVERY_BLOB_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace edgesplit {

// SHA-256 of `bytes`, lowercase hex (64 characters).
std::string Sha256Hex(absl::string_view bytes);

// INVALID_ARGUMENT unless `hex` is 64 lowercase hex digits (names come
// from the network; they become file names).
absl::Status ValidateBlobId(absl::string_view hex);

class BlobStore {
 public:
  // Creates the directories under `root` as needed.
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(std::string root);

  // Stores `bytes`; returns their id. Storing existing bytes is a no-op.
  absl::StatusOr<std::string> Put(absl::string_view bytes);
  bool Has(absl::string_view id) const;
  // Size of a complete blob; NOT_FOUND if absent.
  absl::StatusOr<int64_t> Size(absl::string_view id) const;
  // Up to `max_bytes` of a complete blob from `offset` (empty at the end).
  absl::StatusOr<std::string> Read(absl::string_view id, int64_t offset,
                                   int64_t max_bytes) const;
  // The whole blob, checked against its id (DATA_LOSS if the file on disk
  // no longer matches: it is removed).
  absl::StatusOr<std::string> ReadVerified(absl::string_view id);
  // Removes a complete blob (no-op if absent): its last user dropped it.
  void Remove(absl::string_view id);
  // Path of a complete blob (for memory-mapping readers).
  std::string PathOf(absl::string_view id) const;

  // Resumable download: bytes of `id` received so far, appending a chunk
  // at exactly that offset, and committing (hash check; DATA_LOSS and the
  // partial file removed when the bytes do not match the id).
  int64_t PartialSize(absl::string_view id) const;
  absl::Status AppendPartial(absl::string_view id, int64_t offset,
                             absl::string_view chunk);
  absl::Status CommitPartial(absl::string_view id);
  void DropPartial(absl::string_view id);

  const std::string& root() const { return root_; }

 private:
  explicit BlobStore(std::string root) : root_(std::move(root)) {}
  std::string PartialPath(absl::string_view id) const;

  const std::string root_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_DELIVERY_BLOB_STORE_H_
