// The LoRA adapters inference sessions name, for one hosted stage: many
// fine-tuned variants served over the stage's single copy of the shared
// base weights, each request applying its own adapter (mixed in one batch,
// runtime/stage_model.h). An adapter is read on first use from the
// server's adapter directory (<dir>/<name>/, a PEFT directory), cut to the
// stage's blocks, and kept in an LRU of adapters under a byte budget;
// evicting one only drops it from memory (the directory is the spill tier,
// and a later request reads it again: a miss costs one load, never a
// refusal). An adapter the directory lacks may come from an AdapterSource
// (the cluster: fetched once into the directory). Sessions hold their adapter
// (shared_ptr) for their lifetime, so an evicted adapter still in use stays
// alive until its sessions end.
#ifndef EDGESPLIT_EDGE_SERVER_ADAPTER_CACHE_H_
#define EDGESPLIT_EDGE_SERVER_ADAPTER_CACHE_H_

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/lora.h"
#include "runtime/model_config.h"

namespace edgesplit {

// Where adapters missing from the directory come from (the seam tests
// replace; ClusterAdapterSource in adapter_fetcher.h fetches them from
// peers and the controller).
class AdapterSource {
 public:
  virtual ~AdapterSource() = default;
  // Makes adapter `name` of `model_id` a PEFT directory FindAdapterDir
  // finds under `dir` (fetched copies go to
  // FetchedAdaptersDir(dir, model_id)/<name>), or fails naming why.
  virtual absl::Status Materialize(const std::string& model_id,
                                   const std::string& name,
                                   const std::string& dir) = 0;
  // A session used the adapter, already in memory (a source keeping
  // fetched adapters on disk by recency counts it).
  virtual void Used(const std::string& /*model_id*/,
                    const std::string& /*name*/, const std::string& /*dir*/) {}
};

struct AdapterCacheOptions {
  // Adapter directories: <dir>/.cluster/<model_id>/<name> (fetched),
  // else <dir>/<name> (the operator's); "" = none.
  std::string dir;
  int64_t memory_bytes = int64_t{256} << 20;  // Adapters kept in memory.
  // Asked for every adapter read from disk (it fetches one missing from
  // `dir`) and told of every use from memory (null: none). Not owned.
  AdapterSource* source = nullptr;
  std::string model_id;  // The stage's model, for `source`.
};

struct AdapterCacheStats {
  int64_t hits = 0, misses = 0, evictions = 0;
  int64_t resident = 0, resident_bytes = 0;  // Adapters in memory now.
  double load_ms = 0;                        // Summed over misses.
};

// Thread-safe.
class AdapterCache {
 public:
  AdapterCache(ModelConfig model, BlockRange blocks,
               AdapterCacheOptions options);

  // The adapter's part on this stage's blocks (float32, contiguous). A
  // miss reads <dir>/<name> outside the lock. NOT_FOUND when no directory
  // is configured or it lacks the adapter; INVALID_ARGUMENT for a bad name
  // or an adapter that does not fit the model (naming the file).
  absl::StatusOr<std::shared_ptr<const LoraAdapter>> Get(
      const std::string& name);

  AdapterCacheStats stats() const;

 private:
  absl::StatusOr<std::shared_ptr<const LoraAdapter>> Load(
      const std::string& name) const;
  // The whole adapter from its directory (fetched through the source
  // first if need be).
  absl::StatusOr<std::unique_ptr<LoraAdapter>> LoadFromDisk(
      const std::string& name) const;
  void EvictOverBudgetLocked(const std::string& keep)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ModelConfig model_;
  const BlockRange blocks_;
  const AdapterCacheOptions options_;
  mutable absl::Mutex mu_;
  struct Entry {
    std::shared_ptr<const LoraAdapter> adapter;
    int64_t bytes = 0;
    std::list<std::string>::iterator lru;  // Position in lru_.
  };
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::list<std::string> lru_ ABSL_GUARDED_BY(mu_);  // Front: most recent.
  AdapterCacheStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_ADAPTER_CACHE_H_
