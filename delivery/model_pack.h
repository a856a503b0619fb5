// A model directory (a copy of a model: fp32, a quantized copy, a fully
// fine-tuned variant) as content-addressed parts, and back.
//
// Each file is a list of parts, each a blob named by the SHA-256 of its
// bytes. A safetensors file is split into its header and one part per
// tensor, so two copies that share tensors (a fine-tuned model and its
// base: every tensor it did not change) share those parts: a server or
// device that holds one copy fetches only the other's own tensors, and a
// blob store keeps shared tensors once. Any other file (config.json,
// tokenizer files, GGUF) is one part. Parts travel like adapters' files
// (blob_fetcher.h: chunked, resumable, verified), and every file is checked
// against its whole-file SHA-256 when it is written back.
#ifndef EDGESPLIT_DELIVERY_MODEL_PACK_H_
#define EDGESPLIT_DELIVERY_MODEL_PACK_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "delivery/blob_fetcher.h"
#include "delivery/blob_store.h"
#include "edgesplit/v1/delivery.pb.h"
#include "grpcpp/grpcpp.h"

namespace edgesplit {

// Limits a registered copy must keep (a registry entry is untrusted input
// for whoever fetches it).
inline constexpr int kMaxModelFiles = 4096;
inline constexpr int kMaxPartsPerFile = 1 << 20;
// A part's largest size: what BlobFetcher accepts (FetchOptions).
inline constexpr int64_t kMaxPartBytes = int64_t{16} << 30;

// The parts of a file's `bytes` (views into it): a safetensors file whose
// tensors tile its data section is its header (length and JSON) and then
// each non-empty tensor in data order; anything else is one part.
std::vector<absl::string_view> SplitModelFile(const std::string& path,
                                              absl::string_view bytes);

// A directory read and split: the copy's description and every part's
// bytes by blob id (views into `contents`, which owns the files' bytes).
struct PackedModel {
  v1::ModelCopy copy;
  std::map<std::string, absl::string_view> parts;
  std::vector<std::unique_ptr<std::string>> contents;
};

// Every regular file below `dir` (names starting with '.' skipped), sorted
// by path.
absl::StatusOr<PackedModel> PackModelDir(const std::string& dir,
                                         const std::string& model_id,
                                         const std::string& name);

// Relative, '/'-separated, each component of letters, digits, '.', '_',
// '-' and not starting with '.'; at most 8 deep and 512 bytes.
absl::Status ValidateModelFilePath(const std::string& path);
// Its name (an adapter-style name), model id, paths (valid and distinct),
// part ids, sizes (parts add up to each file) and counts; INVALID_ARGUMENT
// naming the file otherwise.
absl::Status ValidateModelCopy(const v1::ModelCopy& copy);

// Reads blob `id` (of `bytes` bytes) from `store` in 1 MiB pieces into
// `sink`, checking its size and SHA-256 on the way; DATA_LOSS otherwise
// (the pieces already passed to `sink` are then not to be trusted).
absl::Status StreamBlob(const BlobStore& store, const std::string& id,
                        int64_t bytes,
                        const std::function<void(absl::string_view)>& sink);

struct ModelFetchStats {
  int64_t parts_fetched = 0;   // Came over the network.
  int64_t parts_held = 0;      // Were in the local store already.
  int64_t bytes_received = 0;  // Over every attempt.
  std::map<std::string, int64_t> parts_from;  // Source -> parts delivered.
};

// Fetches the parts of `copy` that `store` lacks from `sources` in order,
// then writes the files as the directory `out_dir` (which must not exist)
// all at once (a staging directory renamed into place), each file checked
// against its SHA-256. Counts into `stats`.
absl::Status MaterializeModelCopy(const v1::ModelCopy& copy,
                                  absl::Span<BlobSource* const> sources,
                                  BlobFetcher& fetcher, BlobStore& store,
                                  const std::string& out_dir,
                                  ModelFetchStats* stats);

// Where a server or device keeps copy `name` of `model_id` fetched from the
// cluster: <base>/.cluster/<model_id>/<name> (the model id as
// FetchedAdaptersDir spells it). Both come from plans (the network):
// INVALID_ARGUMENT for a name the registry would refuse.
absl::StatusOr<std::string> ModelCopyDir(const std::string& base,
                                         const std::string& model_id,
                                         const std::string& name);

// The copy a ResolveModelCopy answer carries (without the peers).
v1::ModelCopy ToModelCopy(const v1::ResolveModelCopyResponse& resolved);

// Asks the controller's registry (over `controller`) for model copy
// `name` of `model_id` and checks the answer is valid and the one asked
// for. `node`: the asking server, whose nearest holders come first in the
// answer's peers ("" for devices and admins: no peers).
absl::StatusOr<v1::ResolveModelCopyResponse> ResolveModelCopy(
    const std::shared_ptr<grpc::Channel>& controller,
    const std::string& model_id, const std::string& name,
    const std::string& node, absl::Duration timeout);

}  // namespace edgesplit

#endif  // EDGESPLIT_DELIVERY_MODEL_PACK_H_
