// Client selection in split federated learning (the controller's
// `fed_selection:`), measured on the real model.
//
// Four devices fine-tune stories260K on Shakespeare together in sfl rounds
// (device block 0 and the servers' blocks [1, 5) with LoRA, the device
// factors averaged every `--every` updates), each on its own quarter of
// the windows, through a loopback cluster:
//   phone-0, phone-1: plain;
//   phone-2: uploads under averaging privacy at `--noisy-epsilon` (its
//            factors carry Gaussian noise of std sigma * clip);
//   phone-3: on a slow link (`--delay-ms` before each message it sends).
// Policies: every device averaged and training every update (what sfl did
// before selection); `fed_selection: {per_round: 2}` (the two cheapest by
// noise and pace after the first round); and, as the reference, the two
// plain devices alone. Reported: held-out perplexity of the trained split
// (evaluated by phone-0: its averaged factors and the servers' shared
// shard), wall seconds of the run, and per device the rounds its factors
// were averaged in and the updates it sat out.
//
//   fed_select_bench [--model DIR] [--threads 2] [--steps 40] [--every 4]
//                    [--delay-ms 20] [--noisy-epsilon 1] [--noisy-clip 0.05]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "edgesplit/device_agent.h"
#include "runtime/model_store.h"
#include "runtime/threading.h"
#include "runtime/train/training_data.h"
#include "testing/cluster.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using bench::Flag;
using bench::Must;

struct Setup {
  std::string id;  // Job id and temporary directory.
  std::string name;
  int per_round = 0;  // fed_selection.per_round (0: all).
  int devices = 4;    // phone-0 .. phone-{devices-1}.
};

struct Knobs {
  std::string model;
  int steps, every;
  absl::Duration delay;
  double noisy_epsilon, noisy_clip;
};

struct Outcome {
  double before = 0, after = 0;  // Held-out perplexity.
  double seconds = 0;
  std::string rounds;
};

Outcome RunSetup(const Setup& setup, const Knobs& k, const TrainingData& data) {
  Outcome out;
  const std::string tmp = testing::TempDir("fed_select_bench_" + setup.id);
  testing::ClusterOptions co;
  co.tls = false;
  co.profile = false;
  co.controller_yaml =
      absl::StrCat("fed_selection: {per_round: ", setup.per_round, "}\n");
  auto cluster = Must(
      testing::Cluster::Start(
          tmp, {{"real", k.model, false, {{"device", 0, 1}, {"a", 1, 5}}}}, co),
      "cluster");
  TrainingOptions o;
  o.job_id = "select-" + setup.id;
  o.mode = "sfl";
  o.devices = setup.devices;
  for (int d = 1; d < setup.devices; ++d) {
    o.job_members.push_back(absl::StrCat("phone-", d));
  }
  o.rank = 8;
  o.lr = 1e-2;
  o.warmup_steps = 2;
  o.total_steps = k.steps;
  o.average_every = k.every;
  std::vector<std::unique_ptr<DeviceAgent>> agents;
  std::vector<std::unique_ptr<Trainer>> trainers;
  for (int d = 0; d < setup.devices; ++d) {
    DeviceAgentOptions ao;
    ao.controller = cluster->controller_address();
    ao.insecure = true;
    ao.report_profile = false;
    ao.device_name = absl::StrCat("phone-", d);
    ao.generation_timeout = absl::Minutes(30);
    if (d == 3) ao.training_link_delay = k.delay;
    agents.push_back(Must(DeviceAgent::Connect(ao), "agent"));
    TrainingOptions mine = o;
    if (d == 2) {
      mine.averaging_privacy.epsilon = k.noisy_epsilon;
      mine.averaging_privacy.clip = k.noisy_clip;
    }
    // The job's first device creates it; the others join.
    trainers.push_back(
        Must(agents.back()->StartTraining("real", mine), "start training"));
  }
  out.before = std::exp(Must(trainers[0]->Evaluate(data.held_out), "evaluate"));
  std::vector<absl::StatusOr<TrainingRunResult>> results(
      setup.devices, absl::UnknownError("not run"));
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int d = 0; d < setup.devices; ++d) {
    threads.emplace_back([&, d] {
      TrainingRunOptions run;
      run.steps = k.steps;
      run.max_resumes = 0;
      // Device d's quarter of the windows, 4 per update.
      size_t next = static_cast<size_t>(d);
      for (int s = 0; s < k.steps; ++s) {
        auto& batch = run.batches.emplace_back();
        for (int i = 0; i < 4; ++i) {
          batch.push_back(data.train[next % data.train.size()]);
          next += 4;
        }
      }
      results[d] = trainers[d]->Run(run);
    });
  }
  for (auto& t : threads) t.join();
  out.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (int d = 0; d < setup.devices; ++d) {
    const auto& r = Must(results[d], "run");
    absl::StrAppend(&out.rounds, d == 0 ? "" : "  ", r.rounds_averaged, "/",
                    r.rounds, " (", r.skipped, " sat out)");
  }
  out.after = std::exp(Must(trainers[0]->Evaluate(data.held_out), "evaluate"));
  return out;
}

int Main(int argc, char** argv) {
  Knobs k;
  k.model =
      Flag(argc, argv, "model", testing::SharedDir() + "/models/stories260K");
  SetComputeThreads(std::stoi(Flag(argc, argv, "threads", "2")));
  k.steps = std::stoi(Flag(argc, argv, "steps", "40"));
  k.every = std::stoi(Flag(argc, argv, "every", "4"));
  k.delay = absl::Milliseconds(std::stoi(Flag(argc, argv, "delay-ms", "20")));
  k.noisy_epsilon = std::stod(Flag(argc, argv, "noisy-epsilon", "1"));
  k.noisy_clip = std::stod(Flag(argc, argv, "noisy-clip", "0.05"));
  auto store = Must(ModelStore::Open(k.model), "model");
  auto tok = Must(store->LoadTokenizer(), "tokenizer");
  auto data = bench::Shakespeare(*tok, 640, 48);
  std::printf(
      "fed_select_bench: %s, sfl of %d updates (4 windows of 64 tokens "
      "each per device), averaging every %d; phone-2 averages under "
      "epsilon %g (clip %g), phone-3's link adds %s per message\n"
      "  %-24s %-8s %-8s %-6s %-8s %s\n",
      k.model.c_str(), k.steps, k.every, k.noisy_epsilon, k.noisy_clip,
      absl::FormatDuration(k.delay).c_str(), "policy", "before", "after",
      "kept", "seconds",
      "per device phone-0..: rounds averaged in / rounds (updates sat out)");
  double reference = 0;
  for (const Setup& setup : {Setup{"pair", "clean pair (reference)", 0, 2},
                             Setup{"all", "all four averaged", 0, 4},
                             Setup{"select", "fed_selection 2 of 4", 2, 4}}) {
    const Outcome r = RunSetup(setup, k, data);
    if (reference == 0) reference = r.before - r.after;
    std::printf(
        "  %-24s %-8.2f %-8.2f %-6s %-8.1f %s\n", setup.name.c_str(), r.before,
        r.after,
        absl::StrFormat("%.0f%%", 100 * (r.before - r.after) / reference)
            .c_str(),
        r.seconds, r.rounds.c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
