// The stages this server runs, as the controller's plans assign them: for
// every plan stage naming this node, the model's blocks [first, last) (and
// the head when the stage is last) are loaded — only those tensors are read
// — together with a batcher and a KV budget. Stages no plan names any more
// are dropped once their last session ends.
#ifndef EDGESPLIT_EDGE_SERVER_STAGE_HOST_H_
#define EDGESPLIT_EDGE_SERVER_STAGE_HOST_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "edge_server/adapter_cache.h"
#include "edge_server/batcher.h"
#include "edgesplit/v1/controller.pb.h"
#include "runtime/kv_cache.h"
#include "runtime/model_store.h"
#include "runtime/stage_model.h"

namespace edgesplit {

// Where a registered model copy a plan names (Plan.model_copy) is on this
// server's disk. The seam tests replace; ClusterModelSource
// (model_fetcher.h) fetches it from the cluster first if need be.
class ModelCopySource {
 public:
  virtual ~ModelCopySource() = default;
  // The directory holding copy `name` of `model_id`, complete.
  virtual absl::StatusOr<std::string> Materialize(const std::string& model_id,
                                                  const std::string& name) = 0;
};

// A loaded stage. Shared by the host and the sessions using it.
struct HostedStage {
  std::string model_id;
  std::string weights;  // The plan's weight type ("" = the server's own).
  // Where the plan said the model is: a path, or a registered copy (a plan
  // moving to another copy or path reloads the stage).
  std::string model_path, model_copy;
  std::unique_ptr<ModelStore> store;
  std::unique_ptr<StageModel> model;
  std::unique_ptr<Batcher> batcher;  // Destroyed before `model`.
  // The adapters inference sessions of this stage name (never null once
  // loaded).
  std::unique_ptr<AdapterCache> adapters;
  // Emulated slower machine (shared with the host; never null once
  // loaded): training compute sleeps as the batcher does.
  std::shared_ptr<std::atomic<double>> slowdown;
  // Set when a plan no longer serves this stage (the sessions still using
  // it move at their next step).
  std::atomic<bool> retired{false};

  ~HostedStage() { batcher.reset(); }
};

struct StageHostOptions {
  std::string node;  // This server's name in plans.
  int64_t max_batch_tokens = 4096;
  int64_t kv_budget_bytes = int64_t{1} << 30;  // Shared by all sessions.
  StageOptions stage;
  AdapterCacheOptions adapters;  // Per hosted stage.
  // Where plans naming a model copy get it (not owned; outlives the host).
  // Null: such plans fail to load here, saying so.
  ModelCopySource* model_copies = nullptr;
  // Emulation of a slower machine (forwards take this many times as long);
  // SetComputeSlowdown changes it while serving.
  double compute_slowdown = 1.0;
  // Where every stage's batcher reports its forwards (EdgeServer sets it).
  BatchMetrics batch_metrics;
};

// What a hosted stage's forwards of lone one-token steps took so far.
struct LiveStageStats {
  std::string model_id;
  std::string weights;  // The plan's weight type ("" = the server's own).
  int64_t first_block = 0, last_block = 0;
  bool head = false;
  AdapterCacheStats adapters;
  int64_t single_token_forwards = 0;
  double single_token_ms = 0;
};

// Thread-safe.
class StageHost {
 public:
  explicit StageHost(StageHostOptions options) : options_(std::move(options)) {}

  // Loads the stages `plans` assign to this node and forgets the others
  // (with `retire_unlisted` false, keeps them: a controller that just
  // restarted may not know every plan yet). A stage that fails to load is
  // reported and skipped (the rest still load); the previous stages stay
  // serving.
  absl::Status ApplyPlans(const std::vector<v1::Plan>& plans,
                          bool retire_unlisted = true);

  // The stage serving `model_id` blocks [first, last), or NOT_FOUND naming
  // what this node holds.
  absl::StatusOr<std::shared_ptr<HostedStage>> Find(const std::string& model_id,
                                                    int64_t first,
                                                    int64_t last) const;

  // Loads one stage directly (tests, and servers started without a
  // controller).
  absl::Status Load(const std::string& model_id, const std::string& path,
                    const StageSpec& spec);

  // The directory to read `model_id` from: `path`, or with a `copy` name
  // the copy's (fetched first if this server lacks it). Plans' stages and
  // the controller's profile requests both come through here.
  absl::StatusOr<std::string> ModelDir(const std::string& model_id,
                                       const std::string& path,
                                       const std::string& copy) const;

  // Per stage: "model [a, b): N requests in M forwards".
  std::vector<std::string> Describe() const;
  std::vector<LiveStageStats> LiveStats() const;
  void SetComputeSlowdown(double factor) { slowdown_->store(factor); }
  double compute_slowdown() const { return slowdown_->load(); }
  const std::string& node() const { return options_.node; }
  KvBudget* kv_budget() { return &budget_; }

 private:
  using Key = std::tuple<std::string, int64_t, int64_t>;
  // `weights`: the plan's weight type for the stage ("" = options_).
  absl::StatusOr<std::shared_ptr<HostedStage>> LoadStage(
      const std::string& model_id, const std::string& path,
      const StageSpec& spec, const std::string& weights = "") const;

  const StageHostOptions options_;
  KvBudget budget_{options_.kv_budget_bytes};
  const std::shared_ptr<std::atomic<double>> slowdown_ =
      std::make_shared<std::atomic<double>>(options_.compute_slowdown);
  mutable absl::Mutex mu_;
  std::map<Key, std::shared_ptr<HostedStage>> stages_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_STAGE_HOST_H_
