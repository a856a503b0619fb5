#include "delivery/blob_fetcher.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace edgesplit {

absl::StatusOr<FetchResult> BlobFetcher::Fetch(
    const std::string& id, absl::Span<BlobSource* const> sources,
    int64_t expected_bytes) {
  ES_RETURN_IF_ERROR(ValidateBlobId(id));
  absl::MutexLock lock(&mu_);
  FetchResult result;
  if (store_->Has(id)) return result;
  for (BlobSource* source : sources) {
    const bool resumed = store_->PartialSize(id) > 0;
    absl::Status s = FetchFrom(id, *source, expected_bytes, result);
    if (resumed && s.code() == absl::StatusCode::kDataLoss) {
      s = FetchFrom(id, *source, expected_bytes, result);  // From 0 now.
    }
    if (s.ok()) {
      result.source = source->name();
      return result;
    }
    result.failures.push_back(absl::StrCat(source->name(), ": ", s.message()));
  }
  return absl::UnavailableError(
      absl::StrCat("blob ", id, " could not be fetched",
                   sources.empty() ? " (no source holds it)" : ": ",
                   absl::StrJoin(result.failures, "; ")));
}

absl::Status BlobFetcher::FetchFrom(const std::string& id, BlobSource& source,
                                    int64_t expected_bytes,
                                    FetchResult& result) {
  int64_t offset = store_->PartialSize(id);  // Resume where we stopped.
  int64_t total = -1;
  for (;;) {
    int64_t claimed = 0;
    absl::StatusOr<std::string> read =
        source.Read(id, offset, options_.chunk_bytes,
                    absl::Now() + options_.chunk_timeout, &claimed);
    if (!read.ok()) {
      // A partial longer than the blob is not a prefix of it: start over.
      if (read.status().code() == absl::StatusCode::kOutOfRange) {
        store_->DropPartial(id);
      }
      return read.status();
    }
    const std::string& chunk = *read;
    if (claimed < 0 || claimed > options_.max_blob_bytes ||
        (expected_bytes >= 0 && claimed != expected_bytes) ||
        (total >= 0 && claimed != total) ||
        offset + static_cast<int64_t>(chunk.size()) > claimed ||
        static_cast<int64_t>(chunk.size()) > options_.chunk_bytes) {
      store_->DropPartial(id);
      return absl::DataLossError(absl::StrCat("claims ", claimed,
                                              " bytes with a chunk of ",
                                              chunk.size(), " at ", offset));
    }
    total = claimed;
    result.bytes_received += static_cast<int64_t>(chunk.size());
    ES_RETURN_IF_ERROR(store_->AppendPartial(id, offset, chunk));
    offset += static_cast<int64_t>(chunk.size());
    if (offset == total) break;
    if (chunk.empty()) {
      return absl::DataLossError(
          absl::StrCat("stopped at ", offset, " of ", total, " bytes"));
    }
  }
  return store_->CommitPartial(id);  // DATA_LOSS (and discarded) on mismatch.
}

}  // namespace edgesplit
