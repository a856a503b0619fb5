#include "edge_server/stage_host.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit {

absl::StatusOr<std::shared_ptr<HostedStage>> StageHost::LoadStage(
    const std::string& model_id, const std::string& path, const StageSpec& spec,
    const std::string& weights) const {
  auto stage = std::make_shared<HostedStage>();
  stage->model_id = model_id;
  stage->weights = weights;
  StageOptions so = options_.stage;
  if (!weights.empty()) {
    // Plans come from the controller: an unknown name is an error, not a
    // crash.
    so.weights = kernels::ParseWeightType(weights);
    if (!so.weights) {
      return absl::InvalidArgumentError(
          absl::StrCat("the plan's weight type \"", weights,
                       "\" is not one of ", kernels::WeightTypeList()));
    }
  }
  ES_ASSIGN_OR_RETURN(stage->store, ModelStore::Open(path));
  ES_ASSIGN_OR_RETURN(stage->model, StageModel::Load(*stage->store, spec, so));
  AdapterCacheOptions ao = options_.adapters;
  ao.model_id = model_id;
  stage->adapters =
      std::make_unique<AdapterCache>(stage->model->config(), spec.blocks, ao);
  stage->batcher =
      std::make_unique<Batcher>(stage->model.get(), options_.max_batch_tokens,
                                slowdown_, options_.batch_metrics);
  stage->slowdown = slowdown_;
  return stage;
}

absl::Status StageHost::Load(const std::string& model_id,
                             const std::string& path, const StageSpec& spec) {
  ES_ASSIGN_OR_RETURN(auto stage, LoadStage(model_id, path, spec));
  stage->model_path = path;
  absl::MutexLock lock(&mu_);
  stages_[Key(model_id, spec.blocks.first, spec.blocks.last)] =
      std::move(stage);
  return absl::OkStatus();
}

absl::Status StageHost::ApplyPlans(const std::vector<v1::Plan>& plans,
                                   bool retire_unlisted) {
  std::map<Key, std::shared_ptr<HostedStage>> next;
  std::vector<std::string> errors;
  std::map<std::tuple<std::string, std::string, std::string>,
           absl::StatusOr<std::string>>
      dirs;
  for (const v1::Plan& plan : plans) {
    for (int i = 0; i < plan.stages_size(); ++i) {
      const v1::PlanStage& ps = plan.stages(i);
      if (ps.node() != options_.node &&
          std::find(ps.standby().begin(), ps.standby().end(), options_.node) ==
              ps.standby().end()) {
        continue;
      }
      const Key key(plan.model_id(), ps.first_block(), ps.last_block());
      StageSpec spec;
      spec.blocks = {ps.first_block(), ps.last_block()};
      // A server stage can start at block 0 only when the plan gives the
      // device zero blocks: then this hop embeds and takes token ids.
      spec.embedding = ps.first_block() == 0;
      spec.head = i + 1 == plan.stages_size() && !plan.u_shaped();
      {
        // Same blocks, head placement, weight type and model directory or
        // copy: keep the loaded stage. A plan that moved the head
        // (U-shaped or not), changed the precision or the copy (a new
        // fine-tuned version) needs the other one.
        absl::MutexLock lock(&mu_);
        auto it = stages_.find(key);
        if (it != stages_.end() &&
            it->second->model->spec().head == spec.head &&
            it->second->weights == ps.weights() &&
            it->second->model_path == plan.model_path() &&
            it->second->model_copy == plan.model_copy()) {
          next[key] = it->second;
          continue;
        }
      }
      // A copy this server lacks is fetched here, once for all its stages
      // (a failure too is asked once per update).
      const std::tuple<std::string, std::string, std::string> where(
          plan.model_id(), plan.model_path(), plan.model_copy());
      auto known = dirs.find(where);
      if (known == dirs.end()) {
        known = dirs.emplace(where, ModelDir(plan.model_id(), plan.model_path(),
                                             plan.model_copy()))
                    .first;
      }
      const absl::StatusOr<std::string>& dir = known->second;
      absl::StatusOr<std::shared_ptr<HostedStage>> stage =
          dir.ok() ? LoadStage(plan.model_id(), *dir, spec, ps.weights())
                   : absl::StatusOr<std::shared_ptr<HostedStage>>(dir.status());
      if (!stage.ok()) {
        errors.push_back(absl::StrCat("model ", plan.model_id(), " blocks [",
                                      ps.first_block(), ", ", ps.last_block(),
                                      "): ", stage.status().message()));
        continue;
      }
      (*stage)->model_path = plan.model_path();
      (*stage)->model_copy = plan.model_copy();
      next[key] = *std::move(stage);
    }
  }
  {
    // Sessions hold their stage through shared_ptr: dropping it here only
    // unloads it once they end.
    absl::MutexLock lock(&mu_);
    if (!retire_unlisted) {
      for (const auto& [key, stage] : stages_) next.emplace(key, stage);
    }
    stages_.swap(next);
    // `next` now holds the previous stages: those not kept are retired.
    for (auto& [key, old] : next) {
      auto it = stages_.find(key);
      if (it == stages_.end() || it->second != old) old->retired = true;
    }
  }
  if (!errors.empty()) {
    return absl::InternalError(absl::StrJoin(errors, "; "));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> StageHost::ModelDir(const std::string& model_id,
                                                const std::string& path,
                                                const std::string& copy) const {
  if (copy.empty()) return path;
  if (options_.model_copies == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan names model copy \"", copy, "\" of ", model_id,
        ", but this server fetches no model copies (its config needs a "
        "controller and a model_dir)"));
  }
  return options_.model_copies->Materialize(model_id, copy);
}

absl::StatusOr<std::shared_ptr<HostedStage>> StageHost::Find(
    const std::string& model_id, int64_t first, int64_t last) const {
  absl::MutexLock lock(&mu_);
  auto it = stages_.find(Key(model_id, first, last));
  if (it == stages_.end()) {
    std::vector<std::string> held;
    for (const auto& [k, s] : stages_) {
      held.push_back(absl::StrCat(std::get<0>(k), " [", std::get<1>(k), ", ",
                                  std::get<2>(k), ")"));
    }
    return absl::NotFoundError(absl::StrCat(
        "node ", options_.node, " does not serve model ", model_id, " blocks [",
        first, ", ", last, ") (it serves: ",
        held.empty() ? "nothing" : absl::StrJoin(held, ", "), ")"));
  }
  return it->second;
}

std::vector<std::string> StageHost::Describe() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [k, s] : stages_) {
    const BatcherStats st = s->batcher->stats();
    out.push_back(absl::StrCat(std::get<0>(k), " [", std::get<1>(k), ", ",
                               std::get<2>(k), "): ", st.items, " requests in ",
                               st.forwards, " forwards"));
  }
  return out;
}

std::vector<LiveStageStats> StageHost::LiveStats() const {
  absl::MutexLock lock(&mu_);
  std::vector<LiveStageStats> out;
  for (const auto& [k, s] : stages_) {
    const BatcherStats st = s->batcher->stats();
    out.push_back({std::get<0>(k), s->weights, std::get<1>(k), std::get<2>(k),
                   s->model->spec().head, s->adapters->stats(),
                   st.single_token_forwards, st.single_token_ms});
  }
  return out;
}

}  // namespace edgesplit
