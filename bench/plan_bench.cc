// The planner on emulated networks: for the plan the controller chose from
// measured profiles and for hand-written plans, the predicted and the
// measured generation latency, on the seeds' network (device 70/300 Mbit/s,
// 10 ms each way; servers 400 Mbit/s, 2 ms; device at a tenth of a
// server's compute) and on a constrained radio. Three servers and the
// device run in this process, links through user-space emulators; runs of
// the plans are interleaved (median of 3).
//
//   plan_bench [--model build/bench_models/gpt2-small] [--tokens 16]
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "controller/auto_plan.h"
#include "edgesplit/device_agent.h"
#include "runtime/model_init.h"
#include "runtime/model_store.h"
#include "runtime/threading.h"
#include "testing/cluster.h"
#include "testing/test_paths.h"
#include "tests/split_util.h"

namespace edgesplit {
namespace {

using testing::ClusterPlan;
using testing::LinkSpec;

constexpr char kPrompt[] = "Once upon a time, in a small town by the sea,";

struct Network {
  std::string name;
  LinkSpec device;  // Every server's device-facing link.
};

struct Row {
  std::string name;
  std::string stages;
  double predicted_ms = 0;
  std::vector<double> measured_ms;
};

std::string Describe(const v1::Plan& p) {
  std::string s;
  for (const auto& st : p.stages()) {
    absl::StrAppend(&s, s.empty() ? "" : " ", st.node(), "[", st.first_block(),
                    ",", st.last_block(), ")");
  }
  if (p.u_shaped()) absl::StrAppend(&s, " U");
  return s;
}

// The controller's cost graph as the planner's views.
void Views(const v1::ClusterStatus& status, std::vector<NodeView>* servers,
           NodeView* device) {
  for (const v1::NodeStatus& n : status.nodes()) {
    NodeView v;
    v.name = n.node();
    for (const auto& c : n.compute()) {
      if (c.model_id() == "auto") {
        v.has_compute = true;
        v.compute = c;
      }
    }
    v.links.assign(n.links().begin(), n.links().end());
    if (n.node() == kDeviceNode) {
      *device = v;
    } else if (n.alive()) {
      servers->push_back(v);
    }
  }
}

int Main(int argc, char** argv) {
  std::string model = "build/bench_models/gpt2-small";
  int tokens = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--model") {
      model = v;
    } else if (f == "--tokens") {
      tokens = std::stoi(v);
    } else {
      std::cerr << "unknown flag " << f << "\n";
      return 2;
    }
  }
  SetComputeThreads(2);
  model = std::filesystem::absolute(model).lexically_normal().string();
  if (!std::filesystem::exists(model + "/config.json")) {
    ModelInitOptions o;
    o.arch = Arch::kGpt2;
    o.preset = "small";
    o.out_dir = model;
    std::cerr << "writing gpt2 small to " << model << "\n";
    if (!InitModel(o).ok()) return 1;
  }
  auto store = ModelStore::Open(model);
  if (!store.ok()) return 1;
  const ModelConfig config = (*store)->config();
  const int n = static_cast<int>(config.num_layers);
  auto tok = (*store)->LoadTokenizer();
  const int prompt = static_cast<int>((*tok)->EncodePrompt(kPrompt)->size());

  // Hand-written plans a person might pin.
  std::vector<ClusterPlan> hand = {
      {"one-server", model, false, {{"device", 0, 1}, {"a", 1, n}}},
      {"two-servers",
       model,
       false,
       {{"device", 0, 1}, {"a", 1, n / 2}, {"b", n / 2, n}}},
      {"three-servers",
       model,
       false,
       {{"device", 0, 1},
        {"a", 1, n / 3},
        {"b", n / 3, 2 * n / 3},
        {"c", 2 * n / 3, n}}},
      {"device-third", model, false, {{"device", 0, n / 3}, {"a", n / 3, n}}},
      {"device-two-thirds",
       model,
       false,
       {{"device", 0, 2 * n / 3}, {"a", 2 * n / 3, n}}},
      {"u-one-server", model, true, {{"device", 0, 1}, {"a", 1, n}}},
      {"u-two-servers",
       model,
       true,
       {{"device", 0, 1}, {"a", 1, n / 2}, {"b", n / 2, n}}},
  };
  PlanConfig spec;
  spec.model_id = "auto";
  spec.model_path = model;
  spec.automatic = true;
  spec.planner.prompt_tokens = prompt;
  spec.planner.output_tokens = tokens;
  spec.planner.min_device_blocks = 1;
  testing::ClusterOptions o;
  o.servers = {"a", "b", "c"};
  o.auto_plans = {absl::StrCat(
      "model: {id: auto, path: ", model, "}\nplanner:\n  objective: latency\n",
      "  prompt_tokens: ", prompt, "\n  output_tokens: ", tokens,
      "\n  min_device_blocks: 1\n  u_shaped: auto\n")};
  const std::vector<Network> networks = {
      {"seeds: device 70/300 Mbit/s, 10 ms each way",
       LinkSpec{70e6 / 8, 300e6 / 8, absl::Milliseconds(10)}},
      {"constrained radio: device 2/8 Mbit/s, 30 ms each way",
       LinkSpec{2e6 / 8, 8e6 / 8, absl::Milliseconds(30)}},
  };
  for (const char* s : {"a", "b", "c"}) {
    o.device_links[s] = networks[0].device;
    o.peer_links[s] = LinkSpec{400e6 / 8, 400e6 / 8, absl::Milliseconds(2)};
  }
  auto cluster =
      testing::Cluster::Start(testing::TempDir("plan_bench"), hand, o);
  if (!cluster.ok()) {
    std::cerr << cluster.status() << "\n";
    return 1;
  }
  Controller& controller = *(*cluster)->controller();
  DeviceAgentOptions ao;
  ao.controller = (*cluster)->controller_address();
  (*cluster)->SecureDevice("device", &ao);
  ao.compute_slowdown = 10;
  ao.link_profile_interval = absl::ZeroDuration();
  ao.generation_timeout = absl::Minutes(5);
  auto agent = DeviceAgent::Connect(ao);
  if (!agent.ok()) return 1;

  std::printf(
      "model %s (%d blocks), %d prompt + %d output tokens, greedy; "
      "device compute x10 (emulated)\n",
      std::string(ArchName(config.arch)).c_str(), n, prompt, tokens);
  for (const Network& net : networks) {
    for (const char* s : {"a", "b", "c"})
      (*cluster)->link(s)->SetSpec(net.device);
    // Sessions measure the device's link before asking for a route; the
    // controller re-plans with it.
    for (int i = 0; i < 2; ++i) {
      auto s = (*agent)->OpenSession("auto");
      if (!s.ok()) std::cerr << "auto: " << s.status() << "\n";
    }
    std::vector<NodeView> servers;
    NodeView device;
    Views(controller.ClusterStatus(), &servers, &device);
    std::vector<Row> rows;
    std::vector<std::unique_ptr<Session>> sessions;
    auto add = [&](const std::string& id, const std::string& name) -> bool {
      auto plan = controller.GetPlan(id);
      auto session = (*agent)->OpenSession(id);
      if (!plan.ok() || !session.ok()) {
        std::cerr << id << ": "
                  << (plan.ok() ? session.status() : plan.status()) << "\n";
        return false;
      }
      const v1::Plan& p = plan->plans(0);
      Row r;
      r.name = name;
      r.stages = Describe(p);
      PlanConfig pc;
      pc.u_shaped = p.u_shaped();
      for (const auto& st : p.stages()) {
        pc.stages.push_back({st.node(), st.first_block(), st.last_block(), 0});
      }
      auto predicted =
          EvaluatePlan(spec, config, servers, device, DefaultLink{}, pc);
      r.predicted_ms = predicted.ok() ? predicted->latency_ms : -1;
      rows.push_back(r);
      sessions.push_back(*std::move(session));
      return true;
    };
    if (!add("auto", "planner's choice")) return 1;
    for (const ClusterPlan& h : hand) {
      if (!add(h.model_id, h.model_id)) return 1;
    }
    for (int rep = 0; rep < 3; ++rep) {
      for (size_t i = 0; i < rows.size(); ++i) {
        auto st = sessions[i]->Generate(kPrompt, testing::GreedyTokens(tokens));
        if (!st.ok()) {
          std::cerr << rows[i].name << ": " << st.status() << "\n";
          return 1;
        }
        rows[i].measured_ms.push_back(
            st->prefill_ms + (tokens - 1) * 1e3 / st->decode_tokens_per_s);
      }
    }
    double best = 1e18, worst = 0;
    for (Row& r : rows) {
      std::sort(r.measured_ms.begin(), r.measured_ms.end());
      if (&r != &rows[0]) {
        best = std::min(best, r.measured_ms[1]);
        worst = std::max(worst, r.measured_ms[1]);
      }
    }
    std::printf("\n%s\n\n", net.name.c_str());
    std::printf(
        "| plan | stages | predicted ms | measured ms | error | vs best hand | "
        "vs worst hand |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
    for (const Row& r : rows) {
      const double m = r.measured_ms[1];
      std::printf("| %s | %s | %.0f | %.0f | %+.1f%% | %.2f | %.2f |\n",
                  r.name.c_str(), r.stages.c_str(), r.predicted_ms, m,
                  100 * (m - r.predicted_ms) / r.predicted_ms, m / best,
                  m / worst);
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
