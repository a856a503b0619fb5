// A LoRA adapter's files as content-addressed blobs: what the controller's
// registry lists for an adapter (delivery.proto's RegisteredAdapter), and
// turning those blobs, fetched from peers or the controller, back into the
// PEFT directory <dir>/<name> that servers and devices load.
#ifndef EDGESPLIT_DELIVERY_ADAPTER_FILES_H_
#define EDGESPLIT_DELIVERY_ADAPTER_FILES_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "delivery/blob_fetcher.h"
#include "delivery/blob_store.h"
#include "edgesplit/v1/delivery.pb.h"
#include "grpcpp/grpcpp.h"

namespace edgesplit {

// The files a registered adapter has: a PEFT directory's two.
inline constexpr const char* kAdapterFiles[] = {"adapter_config.json",
                                                "adapter_model.safetensors"};

struct AdapterFetchStats {
  int64_t adapters = 0;  // Materialized.
  int64_t evicted = 0;   // Removed from disk again (edge servers' budget).
  int64_t bytes_received = 0;                 // Over every attempt.
  std::map<std::string, int64_t> blobs_from;  // Source -> blobs delivered.
};

// Asks the controller's AdapterRegistry (over `controller`) where adapter
// `name` of `model_id` comes from, on behalf of `node` (a server, or a
// device's name), and checks the answer is the adapter asked for.
absl::StatusOr<v1::ResolveAdapterResponse> ResolveAdapter(
    const std::shared_ptr<grpc::Channel>& controller,
    const std::string& model_id, const std::string& name,
    const std::string& node, absl::Duration timeout);

// Where adapters of `model_id` fetched from the cluster live under an
// adapter directory: <adapter_dir>/.cluster/<model_id>/<name> (a model id
// that is no safe path component -- "org/model", over 128 bytes -- by
// its SHA-256 instead: .cluster/%<hex>). No adapter name starts with '.',
// so this never meets a directory an operator put there, and two models'
// adapters of one name stay apart. INVALID_ARGUMENT for an empty id.
absl::StatusOr<std::string> FetchedAdaptersDir(const std::string& adapter_dir,
                                               const std::string& model_id);

// Where a session's adapter `name` of `model_id` is read from: the copy
// fetched from the cluster if there is one, else the operator's
// <adapter_dir>/<name>; "" when neither exists (fetch it into
// FetchedAdaptersDir). `name` must be valid (ValidateAdapterName); an
// empty `model_id` looks at the operator's directory only.
absl::StatusOr<std::string> FindAdapterDir(const std::string& adapter_dir,
                                           const std::string& model_id,
                                           const std::string& name);

// Fetches `adapter`'s files (each verified by its SHA-256) from `sources`
// in order into `store`, then writes them as <dir>/<name>, all at once (a
// staging directory renamed into place). Counts into `stats`.
absl::Status MaterializeFromSources(const v1::RegisteredAdapter& adapter,
                                    absl::Span<BlobSource* const> sources,
                                    BlobFetcher& fetcher, BlobStore& store,
                                    const std::string& dir,
                                    AdapterFetchStats* stats);

}  // namespace edgesplit

#endif  // EDGESPLIT_DELIVERY_ADAPTER_FILES_H_
