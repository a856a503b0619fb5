// Fetching blobs (blob_store.h) from whoever holds them: the nearest peer
// first, the origin (the controller) last. A download is chunked and
// resumable (it continues a partial download at its size, from any source:
// the bytes are the same wherever they come from), and verified against
// the blob's SHA-256 before it is kept: a source that fails, or whose bytes
// do not hash to the id, is skipped (mismatching bytes are discarded) and
// the next one tried.
#ifndef EDGESPLIT_DELIVERY_BLOB_FETCHER_H_
#define EDGESPLIT_DELIVERY_BLOB_FETCHER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "delivery/blob_store.h"

namespace edgesplit {

// A node that may hold blobs. The seam tests replace (blob_fakes.h);
// GrpcBlobSource (blob_service.h) reads a peer's BlobService.
class BlobSource {
 public:
  virtual ~BlobSource() = default;
  virtual std::string name() const = 0;
  // Up to `max_bytes` of blob `id` from `offset`, and the blob's size in
  // `*total`. NOT_FOUND when the source lacks it.
  virtual absl::StatusOr<std::string> Read(const std::string& id,
                                           int64_t offset, int64_t max_bytes,
                                           absl::Time deadline,
                                           int64_t* total) = 0;
};

struct FetchOptions {
  int64_t chunk_bytes = int64_t{1} << 20;
  absl::Duration chunk_timeout = absl::Seconds(10);
  int64_t max_blob_bytes = int64_t{16} << 30;  // A claimed size above: refused.
};

struct FetchResult {
  std::string source;          // Who delivered the verified blob ("" = here).
  int64_t bytes_received = 0;  // Over every attempt.
  std::vector<std::string> failures;  // "source: why", in order.
};

// Thread-safe; one download at a time (a second caller for the same blob
// finds it stored when it gets its turn).
class BlobFetcher {
 public:
  explicit BlobFetcher(BlobStore* store, FetchOptions options = {})
      : store_(store), options_(options) {}

  // Ensures blob `id` is in the store, trying `sources` in order; with
  // `expected_bytes` >= 0 (what a registry says), a source claiming another
  // size is refused at once. A source whose bytes fail the hash after
  // resuming someone else's partial download is tried again from the
  // start (the bad bytes may not be its own). UNAVAILABLE naming every
  // source's failure when none delivered it.
  absl::StatusOr<FetchResult> Fetch(const std::string& id,
                                    absl::Span<BlobSource* const> sources,
                                    int64_t expected_bytes = -1);

 private:
  // One source: resume, read chunk by chunk, commit (hash check).
  absl::Status FetchFrom(const std::string& id, BlobSource& source,
                         int64_t expected_bytes, FetchResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  BlobStore* const store_;
  const FetchOptions options_;
  absl::Mutex mu_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_DELIVERY_BLOB_FETCHER_H_
