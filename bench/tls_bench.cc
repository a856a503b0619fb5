// The cost of mutual TLS and route grants on loopback, in one run: decode
// tokens/s of a 3-hop split (device -> a -> b -> c) over TLS with grants,
// in plaintext, and in plaintext with grants; and the latency of opening a
// session (the controller's signed route, then the streams along it with
// every hop checking the grant) on new and on reused connections. Runs
// alternate (the order rotating each round); throughput is reported as the
// median and best of `--reps` and as the median of each round's ratio to
// plaintext, open latency as the median. Second, identical TLS and
// plaintext clusters are the controls: the plaintext one's ratio is the
// noise floor of this machine (the clusters share two cores, so thread
// placement alone moves decode by several percent).
//
//   tls_bench [--model ../shared/models/stories260K] [--tokens 256]
//             [--reps 15] [--threads 2]
//
// A tiny model is the worst case: the per-message cost of TLS is the same
// for any model, and the smaller the compute the larger its share.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "edgesplit/device_agent.h"
#include "runtime/model_store.h"
#include "runtime/threading.h"
#include "testing/cluster.h"
#include "testing/test_paths.h"
#include "tests/split_util.h"

namespace edgesplit {
namespace {

struct Side {
  std::unique_ptr<testing::Cluster> cluster;
  double best_tps = 0;
  std::vector<double> tps;
  std::vector<double> open_ms;    // New agent: new connections.
  std::vector<double> reopen_ms;  // Same agent: connections reused.
  std::unique_ptr<DeviceAgent> agent;
};

std::unique_ptr<DeviceAgent> NewAgent(const testing::Cluster& c) {
  DeviceAgentOptions o;
  o.controller = c.controller_address();
  o.report_profile = false;
  c.SecureDevice("device", &o);
  auto a = DeviceAgent::Connect(o);
  if (!a.ok()) {
    std::cerr << a.status() << "\n";
    std::exit(1);
  }
  return std::move(*a);
}

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// Opening a session: the controller's route (and its signed grant), then
// the session's streams opened hop by hop (handshakes on new connections,
// grant checks at every hop) with the prompt's prefill, which is taken
// out: what is left is the cost of opening.
double OpenMs(DeviceAgent& agent, std::unique_ptr<Session>* out) {
  const auto t0 = std::chrono::steady_clock::now();
  auto session = agent.OpenSession("m");
  if (!session.ok()) {
    std::cerr << session.status() << "\n";
    std::exit(1);
  }
  auto first = (*session)->Generate("Once", testing::GreedyTokens(1));
  const double ms = Ms(std::chrono::steady_clock::now() - t0);
  if (!first.ok()) {
    std::cerr << first.status() << "\n";
    std::exit(1);
  }
  *out = *std::move(session);
  return ms - first->prefill_ms;
}

void Round(Side* s, int tokens) {
  std::unique_ptr<Session> session;
  auto fresh = NewAgent(*s->cluster);
  s->open_ms.push_back(OpenMs(*fresh, &session));
  s->reopen_ms.push_back(OpenMs(*s->agent, &session));
  auto st =
      session->Generate("Once upon a time", testing::GreedyTokens(tokens));
  if (!st.ok()) {
    std::cerr << st.status() << "\n";
    std::exit(1);
  }
  s->best_tps = std::max(s->best_tps, st->decode_tokens_per_s);
  s->tps.push_back(st->decode_tokens_per_s);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  std::string model = "../shared/models/stories260K";
  int tokens = 256, reps = 15, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--model") {
      model = v;
    } else if (f == "--tokens") {
      tokens = std::stoi(v);
    } else if (f == "--reps") {
      reps = std::stoi(v);
    } else if (f == "--threads") {
      threads = std::stoi(v);
    } else {
      std::cerr << "unknown flag " << f << "\n";
      return 2;
    }
  }
  SetComputeThreads(threads);
  model = std::filesystem::absolute(model).lexically_normal().string();
  auto store = ModelStore::Open(model);
  if (!store.ok()) {
    std::cerr << store.status() << "\n";
    return 1;
  }
  const int64_t n = (*store)->config().num_layers;
  const int64_t q = std::max<int64_t>(1, n / 4);
  const testing::ClusterPlan plan{"m",
                                  model,
                                  false,
                                  {{"device", 0, q},
                                   {"a", q, 2 * q},
                                   {"b", 2 * q, 3 * q},
                                   {"c", 3 * q, n}}};
  // Mutual TLS with route grants (the default), plaintext without, and
  // plaintext with grants (what verifying grants alone costs).
  Side tls, plain, tls2, control, granted;
  const std::vector<std::pair<const char*, Side*>> sides = {
      {"mutual TLS + grants", &tls},
      {"plaintext", &plain},
      {"mutual TLS + grants (2nd cluster)", &tls2},
      {"plaintext (2nd cluster, control)", &control},
      {"plaintext + grants", &granted}};
  int index = 0;
  for (auto& [name, s] : sides) {
    testing::ClusterOptions o;
    o.profile = false;
    o.tls = s == &tls || s == &tls2;
    o.plaintext_grants = s == &granted;
    auto c = testing::Cluster::Start(
        testing::TempDir(absl::StrCat("tls_bench_", index++)), {plan}, o);
    if (!c.ok()) {
      std::cerr << c.status() << "\n";
      return 1;
    }
    s->cluster = *std::move(c);
    s->agent = NewAgent(*s->cluster);
  }
  for (int r = 0; r < reps; ++r) {
    for (size_t k = 0; k < sides.size(); ++k) {
      Round(sides[(k + r) % sides.size()].second, tokens);
    }
  }
  std::printf(
      "model %s, 3 hops (device [0,%ld) a b c), %d threads, %d tokens, "
      "loopback, one process, %d alternating rounds\n\n",
      model.c_str(), static_cast<long>(q), threads, tokens, reps);
  std::printf(
      "| | decode tok/s (median) | best | vs plaintext, same round "
      "(median) | session open, new connections (ms, median) | session "
      "open, reused connections (ms, median) |\n|---|---|---|---|---|---|\n");
  for (auto& [name, s] : sides) {
    // Each round's ratio to plaintext, then their median: the machine's
    // speed drifts between rounds more than within one.
    std::vector<double> ratio;
    for (int r = 0; r < reps; ++r) ratio.push_back(s->tps[r] / plain.tps[r]);
    std::printf("| %s | %.1f | %.1f | %.3f | %.2f | %.2f |\n", name,
                Median(s->tps), s->best_tps, Median(ratio), Median(s->open_ms),
                Median(s->reopen_ms));
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
