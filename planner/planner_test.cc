#include "planner/planner.h"

#include <algorithm>
#include <functional>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "planner/cost_model.h"

namespace edgesplit {
namespace planner {
namespace {

using ::testing::HasSubstr;

// Random small clusters: uneven speeds, memory that sometimes binds, links
// that are sometimes missing, either head placement.
Problem RandomProblem(std::mt19937& rng) {
  auto uni = [&](double a, double b) {
    return std::uniform_real_distribution<double>(a, b)(rng);
  };
  auto pick = [&](int a, int b) {
    return std::uniform_int_distribution<int>(a, b)(rng);
  };
  Problem p;
  p.model.num_blocks = pick(1, 7);
  p.model.activation_bytes = pick(1, 8) * 1024;
  p.model.logits_bytes = pick(1, 64) * 1024;
  p.model.block_bytes = pick(1, 10) << 20;
  p.model.embed_bytes = pick(0, 4) << 20;
  p.model.head_bytes = pick(0, 8) << 20;
  p.model.kv_bytes_per_token_per_block = pick(0, 2) * 256;
  p.model.block_flops_per_token = uni(1e6, 1e8);
  p.model.head_flops_per_token = uni(1e6, 1e8);
  const int servers = pick(1, 4);
  for (int i = 0; i <= servers; ++i) {
    NodeSpec n;
    n.name = i == 0 ? kDevice : "s" + std::to_string(i);
    n.decode_ms_per_block = uni(0.1, 5);
    n.prefill_ms_per_token = n.decode_ms_per_block * uni(0.005, 0.2);
    n.head_ms = uni(0, 3);
    n.overhead_ms = uni(0, 1);
    const int64_t room = pick(1, 8) * p.model.block_bytes;
    n.memory_bytes = room + p.model.embed_bytes + p.model.head_bytes +
                     pick(0, 1) * (int64_t{64} << 20);
    n.joules_per_flop = i == 0 ? uni(1e-10, 1e-9) : 0;
    n.joules_per_bit = i == 0 ? uni(1e-8, 1e-7) : 0;
    p.nodes.push_back(n);
  }
  // Shuffle so the device is not always first.
  std::shuffle(p.nodes.begin(), p.nodes.end(), rng);
  for (const NodeSpec& a : p.nodes) {
    for (const NodeSpec& b : p.nodes) {
      if (a.name == b.name || pick(0, 9) == 0) continue;
      p.links.push_back({a.name, b.name, uni(1e6, 1e8), uni(0, 20)});
    }
  }
  p.request.prompt_tokens = pick(1, 64);
  p.request.output_tokens = pick(1, 32);
  p.request.batch = pick(1, 4);
  p.request.micro_batches = pick(1, p.request.batch);
  p.objective = static_cast<Objective>(pick(0, 2));
  p.constraints.u_shaped = static_cast<UShape>(pick(0, 2));
  p.constraints.min_device_blocks = pick(0, 2);
  if (pick(0, 2) == 0)
    p.constraints.max_device_blocks = pick(p.constraints.min_device_blocks, 4);
  return p;
}

struct Best {
  bool found = false;
  double value = 0, latency = 0;
  std::vector<Assignment> plan;
};

// Every ordered subset of servers, every split of the blocks, both shapes:
// the reference the DPs must match.
Best BruteForce(const Problem& p) {
  std::vector<std::string> servers;
  for (const NodeSpec& n : p.nodes) {
    if (n.name != kDevice) servers.push_back(n.name);
  }
  const int L = p.model.num_blocks;
  Best best;
  std::vector<bool> shapes;
  if (p.constraints.u_shaped != UShape::kYes) shapes.push_back(false);
  if (p.constraints.u_shaped != UShape::kNo) shapes.push_back(true);
  const int s = static_cast<int>(servers.size());
  for (bool u : shapes) {
    for (int mask = 1; mask < (1 << s); ++mask) {
      std::vector<std::string> chosen;
      for (int i = 0; i < s; ++i) {
        if (mask >> i & 1) chosen.push_back(servers[i]);
      }
      std::sort(chosen.begin(), chosen.end());
      do {
        const int n = static_cast<int>(chosen.size());
        // Counts: device k0 >= 0, servers >= 1, summing to L.
        std::vector<int> k(n + 1, 0);
        std::function<void(int, int)> rec = [&](int i, int left) {
          if (i == n) {
            k[n] = left;
            if (n > 0 && left < 1) return;
            std::vector<Assignment> plan;
            int b = 0;
            for (int j = 0; j <= n; ++j) {
              plan.push_back({j == 0 ? kDevice : chosen[j - 1], b, b + k[j]});
              b += k[j];
            }
            auto r = Evaluate(p, plan, u);
            if (!r.ok()) return;
            const double v = r->objective_value;
            const bool better =
                !best.found || v < best.value - 1e-9 * std::max(1.0, v) ||
                (p.objective == Objective::kEnergy &&
                 v <= best.value * (1 + 1e-12) && r->latency_ms < best.latency);
            if (better) best = {true, v, r->latency_ms, plan};
            return;
          }
          for (int c = i == 0 ? 0 : 1; c <= left; ++c) {
            k[i] = c;
            rec(i + 1, left - c);
          }
        };
        // k[0] is the device, k[1..n] the servers; the last gets the rest.
        rec(0, L);
      } while (std::next_permutation(chosen.begin(), chosen.end()));
    }
  }
  return best;
}

void ExpectNear(double a, double b) {
  EXPECT_NEAR(a, b, 1e-9 * std::max({1.0, std::abs(a), std::abs(b)}));
}

TEST(PlannerTest, SolveEqualsBruteForceOnRandomInstances) {
  std::mt19937 rng(42);
  int feasible = 0;
  for (int trial = 0; trial < 400; ++trial) {
    SCOPED_TRACE(trial);
    const Problem p = RandomProblem(rng);
    ASSERT_TRUE(p.Validate().ok()) << p.Validate();
    const Best brute = BruteForce(p);
    auto solved = Solve(p);
    ASSERT_EQ(solved.ok(), brute.found) << solved.status();
    if (!brute.found) {
      EXPECT_EQ(solved.status().code(), absl::StatusCode::kFailedPrecondition);
      continue;
    }
    ++feasible;
    ExpectNear(solved->objective_value, brute.value);
    // The plan is real: it re-evaluates to the same numbers, so it meets
    // every constraint Evaluate checks.
    std::vector<Assignment> plan;
    for (const StagePlan& s : solved->stages) {
      plan.push_back({s.node, s.first_block, s.last_block});
    }
    auto again = Evaluate(p, plan, solved->u_shaped);
    ASSERT_TRUE(again.ok()) << again.status();
    ExpectNear(again->objective_value, solved->objective_value);
    ExpectNear(again->latency_ms, solved->latency_ms);
  }
  EXPECT_GT(feasible, 200);
}

TEST(PlannerTest, BothDpsAgreeWithoutPins) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    SCOPED_TRACE(trial);
    Problem p = RandomProblem(rng);
    for (int shape = 0; shape < 4; ++shape) {
      const bool u = shape & 1, zero = shape & 2;
      for (Objective o : {Objective::kLatency, Objective::kThroughput}) {
        p.objective = o;
        internal::CostModel m(p, u, zero);
        auto a = internal::SolveSetDp(m, o);
        auto b = internal::SolveRangeDp(m, o, {});
        ASSERT_EQ(a.empty(), b.empty());
        if (a.empty()) continue;
        const PlanResult pa = m.Predict(a), pb = m.Predict(b);
        ExpectNear(o == Objective::kLatency ? pa.latency_ms : pa.bottleneck_ms,
                   o == Objective::kLatency ? pb.latency_ms : pb.bottleneck_ms);
      }
    }
  }
}

TEST(PlannerTest, PinnedStagesAreKeptAndOptimal) {
  std::mt19937 rng(99);
  int checked = 0;
  for (int trial = 0; trial < 300 && checked < 120; ++trial) {
    SCOPED_TRACE(trial);
    Problem p = RandomProblem(rng);
    const Best free = BruteForce(p);
    if (!free.found || free.plan.size() < 2) continue;
    // Pin one stage of some feasible plan (not always the optimal one's
    // ranges: shift the pin when possible).
    const Assignment& pick = free.plan[1 + trial % (free.plan.size() - 1)];
    p.constraints.pinned = {{pick.node, pick.first_block, pick.last_block}};
    const Best brute = BruteForce(p);  // Evaluate enforces the pin.
    auto solved = Solve(p);
    ASSERT_EQ(solved.ok(), brute.found) << solved.status();
    if (!brute.found) continue;
    ++checked;
    ExpectNear(solved->objective_value, brute.value);
    bool kept = false;
    for (const StagePlan& s : solved->stages) {
      kept |= s.node == pick.node && s.first_block == pick.first_block &&
              s.last_block == pick.last_block;
    }
    EXPECT_TRUE(kept);
  }
  EXPECT_GT(checked, 50);
}

Problem Simple() {
  Problem p;
  p.model.num_blocks = 8;
  p.model.activation_bytes = 4096;
  p.model.logits_bytes = 128000;
  p.model.block_bytes = 100 << 20;
  p.model.head_bytes = 200 << 20;
  p.model.embed_bytes = 200 << 20;
  for (const char* name : {kDevice, "a", "b"}) {
    NodeSpec n;
    n.name = name;
    n.decode_ms_per_block = std::string(name) == kDevice ? 10 : 1;
    n.prefill_ms_per_token = n.decode_ms_per_block / 50;
    n.head_ms = 1;
    n.memory_bytes = int64_t{4} << 30;
    p.nodes.push_back(n);
  }
  for (const char* a : {kDevice, "a", "b"}) {
    for (const char* b : {kDevice, "a", "b"}) {
      if (std::string(a) != b) p.links.push_back({a, b, 50e6, 5});
    }
  }
  p.request.prompt_tokens = 32;
  p.request.output_tokens = 32;
  return p;
}

TEST(PlannerTest, InfeasibleErrorsNameTheConstraint) {
  Problem p = Simple();
  p.constraints.min_device_blocks = 3;
  p.nodes[0].memory_bytes = int64_t{400} << 20;  // Embedding + 2 blocks.
  auto r = Solve(p);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("min_device_blocks=3"));

  p = Simple();
  p.nodes[1].memory_bytes = p.nodes[2].memory_bytes = int64_t{300} << 20;
  p.nodes[0].memory_bytes = int64_t{300} << 20;
  r = Solve(p);
  EXPECT_THAT(r.status().message(), HasSubstr("memory: the nodes hold"));

  p = Simple();
  p.links.erase(
      std::remove_if(p.links.begin(), p.links.end(),
                     [](const LinkSpec& l) { return l.from == kDevice; }),
      p.links.end());
  r = Solve(p);
  EXPECT_THAT(r.status().message(), HasSubstr("links"));

  p = Simple();
  p.constraints.pinned = {{"nobody", 0, 2}};
  r = Solve(p);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("nobody"));

  p = Simple();
  p.constraints.pinned = {{"a", 1, 4}, {"b", 3, 8}};
  EXPECT_THAT(Solve(p).status().message(), HasSubstr("overlaps"));

  p = Simple();
  p.nodes[1].memory_bytes = -1;
  EXPECT_THAT(Solve(p).status().message(), HasSubstr("nodes[1].memory_bytes"));
}

TEST(PlannerTest, SlowUplinkMovesTheCutTowardsTheDevice) {
  Problem p = Simple();
  p.constraints.u_shaped = UShape::kAuto;
  p.model.activation_bytes = 2048 * 4;
  p.model.logits_bytes = 32000 * 4;
  p.nodes[0].head_ms = 10;  // The device computes 10x slower.
  auto fast = Solve(p);
  ASSERT_TRUE(fast.ok()) << fast.status();
  // A fast server and a fast link: everything but the embedding goes out.
  EXPECT_EQ(fast->stages[0].last_block, 0);
  EXPECT_FALSE(fast->u_shaped);
  // A 1 Mbit/s downlink makes returning logits expensive: the head comes
  // back to the device (U-shape), which receives hidden states instead.
  for (LinkSpec& l : p.links) {
    if (l.to == kDevice) l.bytes_per_s = 125e3;
  }
  auto slow = Solve(p);
  ASSERT_TRUE(slow.ok()) << slow.status();
  EXPECT_TRUE(slow->u_shaped);
  EXPECT_EQ(slow->stages[0].last_block, 0);
  // Only the cut before block 0 sends token ids instead of activations:
  // a slow uplink keeps the device at zero blocks.
  for (LinkSpec& l : p.links) {
    if (l.from == kDevice) l.bytes_per_s = 125e3;
  }
  auto slow_up = Solve(p);
  ASSERT_TRUE(slow_up.ok()) << slow_up.status();
  EXPECT_EQ(slow_up->stages[0].last_block, 0);
}

// Zero device blocks: the first server embeds, so the device needs no
// memory for the embedding and sends 4-byte token ids; min_device_blocks
// (privacy) rules the placement out.
TEST(PlannerTest, ZeroDeviceBlocksSendTokenIds) {
  Problem p = Simple();
  p.constraints.u_shaped = UShape::kNo;
  p.nodes[0].memory_bytes = int64_t{100} << 20;  // Not even the embedding.
  auto r = Solve(p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stages[0].last_block, 0);
  EXPECT_EQ(r->stages[0].bytes_to_next, internal::kTokenIdBytes);
  EXPECT_EQ(r->stages[0].memory_bytes, 0);
  // The first server holds the embedding beside its blocks.
  const StagePlan& first = r->stages[1];
  EXPECT_EQ(first.memory_bytes,
            (first.last_block - first.first_block) * p.model.block_bytes +
                p.model.embed_bytes +
                (r->stages.size() == 2 ? p.model.head_bytes : 0));
  p.constraints.min_device_blocks = 1;
  EXPECT_THAT(Solve(p).status().message(),
              HasSubstr("do not hold the embedding"));
  // With room, the privacy floor gives the device one block, and the
  // activation goes up.
  p.nodes[0].memory_bytes = int64_t{4} << 30;
  r = Solve(p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stages[0].last_block, 1);
  EXPECT_EQ(r->stages[0].bytes_to_next, p.model.activation_bytes);
  // Energy: the device's radio bits are 4 bytes per token at zero blocks.
  p.constraints.min_device_blocks = 0;
  p.objective = Objective::kEnergy;
  p.nodes[0].joules_per_bit = 1e-8;
  r = Solve(p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stages[0].last_block, 0);
  const double tokens = p.request.prompt_tokens + p.request.output_tokens - 1;
  EXPECT_NEAR(
      r->device_joules,
      1e-8 * 8 * (tokens * 4 + p.request.output_tokens * p.model.logits_bytes),
      1e-12);
}

TEST(PlannerTest, EnergyKeepsTheMinimumOnTheDevice) {
  Problem p = Simple();
  p.objective = Objective::kEnergy;
  p.nodes[0].joules_per_flop = 1e-9;
  p.model.block_flops_per_token = 1e8;
  p.constraints.min_device_blocks = 2;
  auto r = Solve(p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stages[0].last_block, 2);
  EXPECT_GT(r->device_joules, 0);
}

TEST(PlannerTest, ThroughputBalancesStages) {
  Problem p = Simple();
  p.objective = Objective::kThroughput;
  p.constraints.u_shaped = UShape::kNo;
  p.nodes[1].head_ms = 0;
  p.nodes[2].head_ms = 0;
  auto r = Solve(p);
  ASSERT_TRUE(r.ok()) << r.status();
  // Two equal servers split the blocks evenly; the slow device keeps none.
  ASSERT_EQ(r->stages.size(), 3u);
  EXPECT_EQ(r->stages[0].last_block, 0);
  EXPECT_EQ(r->stages[1].last_block - r->stages[1].first_block, 4);
}

}  // namespace
}  // namespace planner
}  // namespace edgesplit
