#include "planner/planner.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "planner/cost_model.h"

namespace edgesplit {
namespace planner {
namespace {

using internal::CostModel;
using internal::kInf;

// Servers the exact set DP can afford (2^S x S doubles).
constexpr int kMaxServers = 18;
// RangeDp's work limit (pinned plans only).
constexpr double kMaxRangeDpWork = 5e8;  // About a second.

absl::Status Infeasible(const std::string& why) {
  return absl::FailedPreconditionError(absl::StrCat("no feasible plan: ", why));
}

double ObjectiveOf(const PlanResult& p, Objective o) {
  switch (o) {
    case Objective::kLatency:
      return p.latency_ms;
    case Objective::kThroughput:
      return p.bottleneck_ms;
    case Objective::kEnergy:
      return p.device_joules;
  }
  return p.latency_ms;
}

// Explains why no plan exists, naming the binding constraint when a simple
// count shows it; the DP found none, so some constraint binds.
absl::Status ExplainInfeasible(const Problem& p, const CostModel& m) {
  const int L = p.model.num_blocks;
  const Constraints& k = p.constraints;
  const auto& dev = m.device();
  if (dev.cap < 0) {
    return Infeasible(absl::StrCat("memory: the device's ",
                                   p.nodes[dev.index].memory_bytes,
                                   " bytes do not hold the embedding",
                                   m.u_shaped() ? " and head (U-shaped)" : ""));
  }
  if (k.min_device_blocks > dev.cap) {
    return Infeasible(
        absl::StrCat("constraint min_device_blocks=", k.min_device_blocks,
                     ": the device's memory (", p.nodes[dev.index].memory_bytes,
                     " bytes) holds ", std::max(dev.cap, 0), " block(s)",
                     m.u_shaped() ? " next to the embedding and head"
                                  : " next to the embedding"));
  }
  if (k.min_device_blocks > L - 1) {
    return Infeasible(
        absl::StrCat("constraint min_device_blocks=", k.min_device_blocks,
                     " leaves none of the ", L, " blocks to a server"));
  }
  int64_t room = std::max(m.max_device_blocks(), 0);
  bool any_link = false;
  for (int v : m.servers()) {
    room += std::max(m.node(v).cap, 0);
    any_link |= m.LinkLatency(m.device_index(), v) != kInf;
  }
  if (room < L) {
    return Infeasible(
        absl::StrCat("memory: the nodes hold ", room, " of the model's ", L,
                     " blocks (", m.device().bytes_per_block,
                     " bytes per block with the request's KV cache)"));
  }
  if (!any_link) {
    return Infeasible(
        "links: the device has no link (both directions) to "
        "any server");
  }
  if (!m.u_shaped()) {
    bool head_fits = false;
    for (int v : m.servers()) head_fits |= m.node(v).cap_head >= 1;
    if (!head_fits) {
      return Infeasible(absl::StrCat("memory: no server holds the head (",
                                     p.model.head_bytes,
                                     " bytes) and a block; try u_shaped"));
    }
  }
  return Infeasible(
      "the constraints together (memory, links, pinned stages, device "
      "blocks) leave no plan");
}

absl::Status CheckPins(const Problem& p) {
  std::vector<PinnedStage> pins = p.constraints.pinned;
  std::sort(pins.begin(), pins.end(), [](const auto& a, const auto& b) {
    return a.first_block < b.first_block;
  });
  std::set<std::string> seen;
  for (size_t i = 0; i < pins.size(); ++i) {
    const PinnedStage& s = pins[i];
    const std::string what = absl::StrCat(
        "pinned stage ", s.node, " [", s.first_block, ", ", s.last_block, ")");
    bool known = false;
    for (const NodeSpec& n : p.nodes) known |= n.name == s.node;
    if (!known) return absl::InvalidArgumentError(what + ": unknown node");
    if (!seen.insert(s.node).second) {
      return absl::InvalidArgumentError(what + ": node pinned twice");
    }
    if (s.first_block < 0 || s.last_block > p.model.num_blocks ||
        s.first_block > s.last_block) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": not within the model's ", p.model.num_blocks, " blocks"));
    }
    if (s.node == kDevice) {
      if (s.first_block != 0) {
        return absl::InvalidArgumentError(what +
                                          ": the device's range starts at 0");
      }
    } else if (s.first_block == s.last_block) {
      return absl::InvalidArgumentError(what +
                                        ": a server stage needs a block");
    }
    if (i > 0 && pins[i - 1].last_block > s.first_block) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": overlaps pinned stage ", pins[i - 1].node));
    }
  }
  return absl::OkStatus();
}

// Which device placements the constraints allow: zero blocks (the first
// server embeds) and / or some blocks (the device embeds).
std::vector<bool> ZeroDeviceChoices(const Problem& p) {
  const Constraints& k = p.constraints;
  int64_t pinned = -1;  // The device's pinned block count, if pinned.
  for (const PinnedStage& s : k.pinned) {
    if (s.node == kDevice) pinned = s.last_block - s.first_block;
  }
  std::vector<bool> out;
  if (k.min_device_blocks == 0 && pinned <= 0) out.push_back(true);
  if (k.max_device_blocks != 0 && pinned != 0) out.push_back(false);
  return out;
}

// Both placements of the device for one head placement; `bound`: see
// SolveSetDp; NOT_FOUND when no plan beats it.
absl::StatusOr<PlanResult> SolveFixedShape(const Problem& p, bool u_shaped,
                                           Objective objective,
                                           double bound = internal::kInf) {
  absl::StatusOr<PlanResult> best =
      absl::NotFoundError("no plan beats the bound");
  absl::Status infeasible = absl::OkStatus();
  for (bool zero : ZeroDeviceChoices(p)) {
    CostModel m(p, u_shaped, zero);
    std::vector<Assignment> ranges;
    if (!p.constraints.pinned.empty()) {
      if (internal::RangeDpWork(m) > kMaxRangeDpWork) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "a partly pinned plan over ", m.servers().size(), " servers and ",
            p.model.num_blocks,
            " blocks is too large to solve exactly; pin every stage or fewer "
            "servers"));
      }
      ranges = internal::SolveRangeDp(m, objective, p.constraints.pinned);
    } else {
      const double b =
          best.ok() ? std::min(bound, best->objective_value) : bound;
      ranges = internal::SolveSetDp(m, objective, b);
      if (ranges.empty() && b < internal::kInf) continue;
    }
    if (ranges.empty()) {
      // The device-embeds placement explains best (it is the usual one),
      // unless the device cannot hold a block at all.
      if (infeasible.ok() || (!zero && m.device().cap >= 1)) {
        infeasible = ExplainInfeasible(p, m);
      }
      continue;
    }
    PlanResult r = m.Predict(ranges);
    r.objective_value = ObjectiveOf(r, objective);
    if (!best.ok() || r.objective_value < best->objective_value) best = r;
  }
  if (best.ok() || bound < internal::kInf) return best;
  if (!infeasible.ok()) return infeasible;
  return Infeasible("the device-block constraints leave no placement");
}

std::vector<bool> Shapes(UShape u) {
  switch (u) {
    case UShape::kNo:
      return {false};
    case UShape::kYes:
      return {true};
    case UShape::kAuto:
      return {false, true};
  }
  return {false};
}

}  // namespace

absl::Status Problem::Validate() const {
  auto bad = [](const std::string& field, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
  };
  if (model.num_blocks < 1) return bad("model.num_blocks", "must be >= 1");
  if (model.activation_bytes <= 0)
    return bad("model.activation_bytes", "must be > 0");
  if (model.logits_bytes < 0 || model.block_bytes < 0 ||
      model.embed_bytes < 0 || model.head_bytes < 0 ||
      model.kv_bytes_per_token_per_block < 0) {
    return bad("model", "byte counts must be >= 0");
  }
  int devices = 0;
  std::set<std::string> names;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const NodeSpec& n = nodes[i];
    const std::string f = absl::StrCat("nodes[", i, "]");
    if (n.name.empty()) return bad(f + ".name", "missing");
    if (!names.insert(n.name).second) {
      return bad(f + ".name", absl::StrCat("\"", n.name, "\" appears twice"));
    }
    devices += n.name == kDevice;
    if (n.memory_bytes <= 0) return bad(f + ".memory_bytes", "must be > 0");
    for (double v : {n.decode_ms_per_block, n.prefill_ms_per_token, n.head_ms,
                     n.overhead_ms, n.joules_per_flop, n.joules_per_bit}) {
      if (!(v >= 0) || std::isinf(v)) {
        return bad(
            f, absl::StrCat("\"", n.name,
                            "\": times and energies must be finite and >= 0"));
      }
    }
  }
  if (devices != 1) {
    return bad("nodes", absl::StrCat("need exactly one node named \"", kDevice,
                                     "\", found ", devices));
  }
  if (nodes.size() < 2) return bad("nodes", "need at least one server");
  if (nodes.size() - 1 > kMaxServers) {
    return bad("nodes", absl::StrCat(nodes.size() - 1, " servers; at most ",
                                     kMaxServers, " are planned exactly"));
  }
  for (size_t i = 0; i < links.size(); ++i) {
    const LinkSpec& l = links[i];
    const std::string f = absl::StrCat("links[", i, "]");
    if (!names.count(l.from))
      return bad(f + ".from", "unknown node \"" + l.from + "\"");
    if (!names.count(l.to))
      return bad(f + ".to", "unknown node \"" + l.to + "\"");
    if (!(l.bytes_per_s > 0) || std::isinf(l.bytes_per_s)) {
      return bad(f + ".bytes_per_s", "must be > 0");
    }
    if (!(l.rtt_ms >= 0) || std::isinf(l.rtt_ms))
      return bad(f + ".rtt_ms", "must be >= 0");
  }
  if (request.prompt_tokens < 1)
    return bad("request.prompt_tokens", "must be >= 1");
  if (request.output_tokens < 1)
    return bad("request.output_tokens", "must be >= 1");
  if (request.batch < 1) return bad("request.batch", "must be >= 1");
  if (request.micro_batches < 1 || request.micro_batches > request.batch) {
    return bad("request.micro_batches", "must be in [1, batch]");
  }
  if (constraints.min_device_blocks < 0) {
    return bad("constraints.min_device_blocks", "must be >= 0");
  }
  if (constraints.max_device_blocks >= 0 &&
      constraints.max_device_blocks < constraints.min_device_blocks) {
    return bad("constraints.max_device_blocks", "is below min_device_blocks");
  }
  return CheckPins(*this);
}

absl::StatusOr<PlanResult> Evaluate(const Problem& problem,
                                    const std::vector<Assignment>& ranges,
                                    bool u_shaped) {
  if (absl::Status s = problem.Validate(); !s.ok()) return s;
  const bool zero =
      !ranges.empty() && ranges[0].first_block == ranges[0].last_block;
  CostModel m(problem, u_shaped, zero);
  const int L = problem.model.num_blocks;
  if (ranges.size() < 2) {
    return absl::InvalidArgumentError("a plan needs the device and a server");
  }
  std::set<std::string> seen;
  int expected = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const Assignment& a = ranges[i];
    const std::string what =
        absl::StrCat("stage ", i, " (", a.node, " [", a.first_block, ", ",
                     a.last_block, "))");
    const int v = m.NodeIndex(a.node);
    if (v < 0) return absl::InvalidArgumentError(what + ": unknown node");
    if ((i == 0) != (v == m.device_index())) {
      return absl::InvalidArgumentError(what +
                                        ": the device runs the first stage, "
                                        "and only it");
    }
    if (!seen.insert(a.node).second) {
      return absl::InvalidArgumentError(what + ": node appears twice");
    }
    if (a.first_block != expected || a.last_block < a.first_block) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": must start at block ", expected));
    }
    const int k = a.last_block - a.first_block;
    const internal::NodeCost& c = m.node(v);
    if (i > 0 && k < 1) return absl::InvalidArgumentError(what + ": empty");
    const bool head = i > 0 && !u_shaped && i + 1 == ranges.size();
    if (k > (head ? c.cap_head : c.cap)) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": constraint memory: ", problem.nodes[v].memory_bytes,
          " bytes hold ", std::max(head ? c.cap_head : c.cap, 0), " block(s)",
          head || (i == 0 && u_shaped) ? " with the head" : ""));
    }
    if (i == 0 && k < problem.constraints.min_device_blocks) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": constraint min_device_blocks=",
                       problem.constraints.min_device_blocks));
    }
    if (i == 0 && problem.constraints.max_device_blocks >= 0 &&
        k > problem.constraints.max_device_blocks) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": constraint max_device_blocks=",
                       problem.constraints.max_device_blocks));
    }
    if (i > 0 && m.LinkLatency(m.NodeIndex(ranges[i - 1].node), v) == kInf) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": constraint links: no link between ", ranges[i - 1].node,
          " and ", a.node, " in both directions"));
    }
    expected = a.last_block;
  }
  if (expected != L) {
    return absl::InvalidArgumentError(
        absl::StrCat("stages end at block ", expected, " of ", L));
  }
  for (const PinnedStage& pin : problem.constraints.pinned) {
    bool found = false;
    for (const Assignment& a : ranges) {
      found |= a.node == pin.node && a.first_block == pin.first_block &&
               a.last_block == pin.last_block;
    }
    if (!found) {
      return absl::FailedPreconditionError(
          absl::StrCat("constraint pinned: ", pin.node, " [", pin.first_block,
                       ", ", pin.last_block, ") is not in the plan"));
    }
  }
  PlanResult r = m.Predict(ranges);
  r.objective_value = ObjectiveOf(r, problem.objective);
  return r;
}

absl::StatusOr<PlanResult> Solve(const Problem& problem) {
  if (absl::Status s = problem.Validate(); !s.ok()) return s;
  const std::vector<bool> shapes = Shapes(problem.constraints.u_shaped);
  if (problem.objective != Objective::kEnergy) {
    absl::StatusOr<PlanResult> best = absl::UnknownError("unset");
    bool have_error = false;
    for (bool u : shapes) {
      // The first head placement's optimum bounds the second's search.
      const double bound = best.ok() ? best->objective_value : internal::kInf;
      auto r = SolveFixedShape(problem, u, problem.objective, bound);
      if (r.status().code() == absl::StatusCode::kNotFound) continue;
      if (!r.ok()) {
        // Report the first shape's reason (the plain split's, under auto).
        if (!best.ok() && !have_error) best = r.status();
        have_error = true;
        continue;
      }
      if (!best.ok() || r->objective_value < best->objective_value) best = r;
    }
    return best;
  }
  // Energy: the device's joules depend only on its block count and the
  // shape, and never fall as the count grows. Take energy levels from the
  // cheapest; within a level, each shape's counts form a range: solve for
  // latency with the device's count held to it and keep the fastest.
  struct Option {
    double joules;
    int k0;
    bool u;
  };
  std::vector<Option> options;
  for (bool u : shapes) {
    for (bool zero : ZeroDeviceChoices(problem)) {
      CostModel m(problem, u, zero);
      for (int k = m.min_device_blocks(); k <= m.max_device_blocks(); ++k) {
        options.push_back({m.DeviceJoules(k), k, u});
      }
    }
  }
  std::stable_sort(
      options.begin(), options.end(),
      [](const Option& a, const Option& b) { return a.joules < b.joules; });
  absl::Status first_error = absl::OkStatus();
  for (size_t i = 0; i < options.size();) {
    size_t j = i;
    int lo[2] = {1 << 30, 1 << 30}, hi[2] = {-1, -1};
    while (j < options.size() &&
           options[j].joules <= options[i].joules * (1 + 1e-12)) {
      lo[options[j].u] = std::min(lo[options[j].u], options[j].k0);
      hi[options[j].u] = std::max(hi[options[j].u], options[j].k0);
      ++j;
    }
    if (j == i) ++j;  // Never stall (a NaN would compare false).
    absl::StatusOr<PlanResult> best = absl::UnknownError("unset");
    for (int u = 0; u < 2; ++u) {
      if (hi[u] < 0) continue;
      Problem fixed = problem;
      fixed.constraints.min_device_blocks = lo[u];
      fixed.constraints.max_device_blocks = hi[u];
      auto r = SolveFixedShape(fixed, u == 1, Objective::kLatency);
      if (r.ok() && (!best.ok() || r->latency_ms < best->latency_ms)) best = r;
      if (!r.ok() && first_error.ok()) first_error = r.status();
    }
    if (best.ok()) {
      best->objective_value = best->device_joules;
      return best;
    }
    i = j;
  }
  if (first_error.ok()) {
    first_error =
        SolveFixedShape(problem, shapes[0], Objective::kLatency).status();
  }
  return first_error;
}

const char* ObjectiveName(Objective o) {
  switch (o) {
    case Objective::kLatency:
      return "latency";
    case Objective::kThroughput:
      return "throughput";
    case Objective::kEnergy:
      return "energy";
  }
  return "latency";
}

absl::StatusOr<Objective> ParseObjective(const std::string& name) {
  if (name == "latency") return Objective::kLatency;
  if (name == "throughput") return Objective::kThroughput;
  if (name == "energy") return Objective::kEnergy;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown objective \"", name, "\" (latency, throughput or energy)"));
}

}  // namespace planner
}  // namespace edgesplit
