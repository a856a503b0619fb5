#include "controller/auto_plan.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace edgesplit {

namespace {

absl::Status CheckValue(double v, double max, const std::string& field) {
  if (!std::isfinite(v) || v < 0 || v > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " = ", v, " is not a finite number in [0, ", max, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateProfile(const v1::ComputeProfile& c) {
  const std::string at =
      absl::StrCat("compute profile of model \"", c.model_id(), "\": ");
  if (c.model_id().empty())
    return absl::InvalidArgumentError("compute profile without model_id");
  constexpr double kMaxMs = 3.6e6;  // An hour per block is not a profile.
  ES_RETURN_IF_ERROR(
      CheckValue(c.decode_ms_per_block(), kMaxMs, at + "decode_ms_per_block"));
  if (c.decode_ms_per_block() < 1e-6) {
    return absl::InvalidArgumentError(at + "decode_ms_per_block below 1 ns");
  }
  ES_RETURN_IF_ERROR(CheckValue(c.prefill_ms_per_token(), kMaxMs,
                                at + "prefill_ms_per_token"));
  ES_RETURN_IF_ERROR(CheckValue(c.head_ms(), kMaxMs, at + "head_ms"));
  if (!c.weights().empty() && PlanWeightBytes(c.weights()) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(at, "weights \"", c.weights(), "\" is not a weight type"));
  }
  return CheckValue(c.overhead_ms(), kMaxMs, at + "overhead_ms");
}

absl::Status ValidateLink(const v1::LinkProfile& l) {
  const std::string at = absl::StrCat("link profile to \"", l.peer(), "\": ");
  if (l.peer().empty())
    return absl::InvalidArgumentError("link profile without peer");
  ES_RETURN_IF_ERROR(CheckValue(l.rtt_ms(), 3.6e6, at + "rtt_ms"));
  for (double bw : {l.up_bytes_per_s(), l.down_bytes_per_s()}) {
    if (!(bw > 0) || !std::isfinite(bw)) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, "bandwidth ", bw, " is not a positive number"));
    }
  }
  return absl::OkStatus();
}

planner::ModelSpec ModelSpecFor(const ModelConfig& model,
                                const std::string& id) {
  planner::ModelSpec m;
  m.id = id;
  m.num_blocks = static_cast<int>(model.num_layers);
  // Servers and the wire work in fp32 (the default codec).
  m.activation_bytes = model.hidden_size * 4;
  m.logits_bytes = model.vocab_size * 4;
  m.block_bytes = model.ParamsPerBlock() * 4;
  m.embed_bytes = model.EmbeddingParams() * 4;
  m.head_bytes = model.HeadParams() * 4;
  // A server holding the head of a tied model loads the embedding matrix
  // as its LM head.
  if (model.tie_word_embeddings)
    m.head_bytes += model.vocab_size * model.hidden_size * 4;
  m.kv_bytes_per_token_per_block = model.KvBytesPerToken(4);
  m.block_flops_per_token = 2.0 * model.ParamsPerBlock();
  m.head_flops_per_token = 2.0 * model.vocab_size * model.hidden_size;
  return m;
}

absl::StatusOr<planner::Problem> BuildProblem(
    const PlanConfig& spec, const ModelConfig& model,
    const std::vector<NodeView>& servers, const NodeView& device,
    const DefaultLink& default_link) {
  planner::Problem p;
  p.model = ModelSpecFor(model, spec.model_id);
  constexpr int64_t kUnlimited = int64_t{1} << 50;
  auto node_spec = [&](const NodeView& v) {
    planner::NodeSpec n;
    n.name = v.name;
    n.memory_bytes = v.memory_bytes > 0 ? v.memory_bytes : kUnlimited;
    n.decode_ms_per_block = v.compute.decode_ms_per_block();
    n.prefill_ms_per_token = v.compute.prefill_ms_per_token();
    n.head_ms = v.compute.head_ms();
    n.overhead_ms = v.compute.overhead_ms();
    n.joules_per_flop = v.joules_per_flop;
    n.joules_per_bit = v.joules_per_bit;
    return n;
  };
  p.nodes.push_back(node_spec(device));
  p.nodes.back().name = planner::kDevice;
  // The exact planner takes at most kMaxPlannedServers: beyond that, the
  // pinned servers and then the fastest ones (a plan over the slowest of
  // many servers would not be the best anyway unless memory is short).
  std::vector<const NodeView*> candidates;
  for (const NodeView& s : servers) {
    if (s.has_compute) candidates.push_back(&s);  // Unprofiled: not yet.
  }
  auto pinned = [&](const NodeView* v) {
    for (const PlanStageConfig& st : spec.stages) {
      if (st.node == v->name) return true;
    }
    return false;
  };
  std::stable_sort(candidates.begin(), candidates.end(),
                   [&](const NodeView* a, const NodeView* b) {
                     if (pinned(a) != pinned(b)) return pinned(a);
                     return a->compute.decode_ms_per_block() <
                            b->compute.decode_ms_per_block();
                   });
  if (candidates.size() > kMaxPlannedServers)
    candidates.resize(kMaxPlannedServers);
  for (const NodeView* s : candidates) p.nodes.push_back(node_spec(*s));
  if (p.nodes.size() < 2) {
    return absl::UnavailableError(absl::StrCat(
        "no live server has profiled model \"", spec.model_id, "\" yet"));
  }
  // Directed links: a node's own report of (node -> peer) wins, then the
  // peer's report read backwards, then the default.
  std::map<std::pair<std::string, std::string>, planner::LinkSpec> links;
  std::vector<const NodeView*> all = {&device};
  for (const NodeView& s : servers) all.push_back(&s);
  for (const NodeView* v : all) {
    const std::string from = v == &device ? planner::kDevice : v->name;
    for (const v1::LinkProfile& l : v->links) {
      if (l.up_bytes_per_s() <= 0 || l.down_bytes_per_s() <= 0) continue;
      links[{from, l.peer()}] = {from, l.peer(), l.up_bytes_per_s(),
                                 l.rtt_ms()};
      links.emplace(
          std::make_pair(l.peer(), from),
          planner::LinkSpec{l.peer(), from, l.down_bytes_per_s(), l.rtt_ms()});
    }
  }
  // A device measures its link to the server it attaches to. Its access
  // link (radio) is what limits it, so that link stands for its links to
  // the servers it did not measure.
  if (!device.links.empty()) {
    const v1::LinkProfile& l = device.links.front();
    for (const planner::NodeSpec& s : p.nodes) {
      if (s.name == planner::kDevice) continue;
      links.emplace(std::make_pair(std::string(planner::kDevice), s.name),
                    planner::LinkSpec{planner::kDevice, s.name,
                                      l.up_bytes_per_s(), l.rtt_ms()});
      links.emplace(std::make_pair(s.name, std::string(planner::kDevice)),
                    planner::LinkSpec{s.name, planner::kDevice,
                                      l.down_bytes_per_s(), l.rtt_ms()});
    }
  }
  for (const planner::NodeSpec& a : p.nodes) {
    for (const planner::NodeSpec& b : p.nodes) {
      if (a.name == b.name) continue;
      auto it = links.find({a.name, b.name});
      p.links.push_back(it != links.end()
                            ? it->second
                            : planner::LinkSpec{a.name, b.name,
                                                default_link.bytes_per_s,
                                                default_link.rtt_ms});
    }
  }
  const PlannerSettings& ps = spec.planner;
  ES_ASSIGN_OR_RETURN(p.objective, planner::ParseObjective(ps.objective));
  p.request.prompt_tokens = static_cast<int>(ps.prompt_tokens);
  p.request.output_tokens = static_cast<int>(ps.output_tokens);
  p.request.batch = static_cast<int>(ps.batch);
  p.request.micro_batches = static_cast<int>(ps.micro_batches);
  p.constraints.min_device_blocks = static_cast<int>(ps.min_device_blocks);
  p.constraints.max_device_blocks = static_cast<int>(ps.max_device_blocks);
  if (!device.has_compute) {
    // Until the device reports its speed, it runs its minimum, or exactly
    // the blocks a plan pins on it (not both: a fresh cluster would find
    // no feasible plan, and the device profile that would make one is
    // only measured once a session opens).
    p.constraints.max_device_blocks = p.constraints.min_device_blocks;
    for (const PlanStageConfig& s : spec.stages) {
      if (s.node != kDeviceNode) continue;
      const int pinned = static_cast<int>(s.last_block - s.first_block);
      p.constraints.min_device_blocks =
          std::min(p.constraints.min_device_blocks, pinned);
      p.constraints.max_device_blocks = pinned;
    }
  }
  p.constraints.u_shaped = ps.u_shaped == "true"    ? planner::UShape::kYes
                           : ps.u_shaped == "false" ? planner::UShape::kNo
                                                    : planner::UShape::kAuto;
  if (!device.has_compute && p.constraints.u_shaped == planner::UShape::kAuto) {
    // The head's cost on the device is unknown: keep it on a server.
    p.constraints.u_shaped = planner::UShape::kNo;
  }
  for (const PlanStageConfig& s : spec.stages) {
    p.constraints.pinned.push_back(
        {s.node == kDeviceNode ? planner::kDevice : s.node,
         static_cast<int>(s.first_block), static_cast<int>(s.last_block)});
  }
  return p;
}

absl::StatusOr<PlanConfig> PlanAutomatically(
    const PlanConfig& spec, const ModelConfig& model,
    const std::vector<NodeView>& servers, const NodeView& device,
    const DefaultLink& default_link, planner::PlanResult* predictions) {
  ES_ASSIGN_OR_RETURN(planner::Problem problem,
                      BuildProblem(spec, model, servers, device, default_link));
  auto solved = planner::Solve(problem);
  if (!solved.ok()) {
    return absl::Status(solved.status().code(),
                        absl::StrCat(spec.source, ": model \"", spec.model_id,
                                     "\": ", solved.status().message()));
  }
  PlanConfig plan;
  plan.source = spec.source;
  plan.model_id = spec.model_id;
  plan.model_path = spec.model_path;
  plan.model_copy = spec.model_copy;
  plan.u_shaped = solved->u_shaped;
  plan.automatic = true;
  plan.planner = spec.planner;
  plan.privacy = spec.privacy;
  for (const planner::StagePlan& s : solved->stages) {
    PlanStageConfig stage;
    stage.node = s.node == planner::kDevice ? kDeviceNode : s.node;
    stage.first_block = s.first_block;
    stage.last_block = s.last_block;
    // A pinned stage keeps the weight type the plan file gave it.
    for (const PlanStageConfig& pinned : spec.stages) {
      if (pinned.node == stage.node && pinned.first_block == s.first_block &&
          pinned.last_block == s.last_block) {
        stage.weights = pinned.weights;
      }
    }
    plan.stages.push_back(stage);
  }
  if (predictions != nullptr) *predictions = *std::move(solved);
  return plan;
}

absl::StatusOr<planner::PlanResult> EvaluatePlan(
    const PlanConfig& spec, const ModelConfig& model,
    const std::vector<NodeView>& servers, const NodeView& device,
    const DefaultLink& default_link, const PlanConfig& plan) {
  ES_ASSIGN_OR_RETURN(planner::Problem problem,
                      BuildProblem(spec, model, servers, device, default_link));
  if ((problem.constraints.u_shaped == planner::UShape::kNo && plan.u_shaped) ||
      (problem.constraints.u_shaped == planner::UShape::kYes &&
       !plan.u_shaped)) {
    return absl::FailedPreconditionError(
        "the plan's head placement is not allowed");
  }
  std::vector<planner::Assignment> ranges;
  for (const PlanStageConfig& s : plan.stages) {
    ranges.push_back({s.node == kDeviceNode ? planner::kDevice : s.node,
                      static_cast<int>(s.first_block),
                      static_cast<int>(s.last_block)});
  }
  return planner::Evaluate(problem, ranges, plan.u_shaped);
}

}  // namespace edgesplit
