// Split inference on loopback, in one run (ratios, not absolute times):
// decode tokens/s of the whole model in one process vs 2- and 3-stage
// splits through edge servers; added latency per hop; aggregate tokens/s of
// 1, 4 and 16 concurrent sessions; activation bytes per token per codec.
//
//   split_bench [--model build/bench_models/llama-1b] [--threads 2]
//               [--tokens 32]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

#include "edgesplit/device_agent.h"
#include "proto/tensor_codec.h"
#include "runtime/generator.h"
#include "runtime/model_init.h"
#include "runtime/model_store.h"
#include "runtime/threading.h"
#include "testing/cluster.h"
#include "testing/test_paths.h"
#include "tests/split_util.h"

namespace edgesplit {
namespace {

using Clock = std::chrono::steady_clock;

SamplingOptions Greedy(int n) { return testing::GreedyTokens(n); }

const char kPrompt[] = "Once upon a time, in a small town by the sea,";

// Decode tokens/s of one generation through the whole model in this
// process.
double MonolithicOnce(const LocalPipeline& p, const Tokenizer& tok,
                      int tokens) {
  auto seq = p.NewSequence();
  GenerationOptions g;
  g.sampling.temperature = 0;
  g.max_new_tokens = tokens;
  g.stop_at_eos = false;
  auto r = Generate(*seq, tok, kPrompt, g);
  if (!r.ok()) {
    std::cerr << r.status() << "\n";
    std::exit(1);
  }
  return (r->tokens.size() - 1) / r->decode_seconds;
}

struct SplitResult {
  double tps = 0;
  std::vector<HopLatency> hops;
};

void SplitOnce(DeviceAgent& agent, const std::string& model_id, int tokens,
               SplitResult* best) {
  auto session = agent.OpenSession(model_id);
  if (!session.ok()) {
    std::cerr << session.status() << "\n";
    std::exit(1);
  }
  auto st = (*session)->Generate(kPrompt, Greedy(tokens));
  if (!st.ok()) {
    std::cerr << st.status() << "\n";
    std::exit(1);
  }
  if (st->decode_tokens_per_s > best->tps) {
    best->tps = st->decode_tokens_per_s;
    best->hops = st->hops;
  }
}

struct ConcurrentResult {
  double tps = 0;         // All generated tokens / wall time (with prefill).
  double decode_tps = 0;  // Sum of the sessions' decode rates.
};

// `n` sessions generating at once.
ConcurrentResult Concurrent(DeviceAgent& agent, const std::string& model_id,
                            int n, int tokens) {
  std::vector<std::unique_ptr<Session>> sessions;
  for (int i = 0; i < n; ++i) sessions.push_back(*agent.OpenSession(model_id));
  std::vector<std::thread> threads;
  std::atomic<int64_t> produced{0};
  std::vector<double> decode(n, 0.0);
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      auto st = sessions[i]->Generate(kPrompt, Greedy(tokens));
      if (st.ok()) {
        produced += st->tokens.size();
        decode[i] = st->decode_tokens_per_s;
      }
    });
  }
  for (auto& t : threads) t.join();
  ConcurrentResult r;
  r.tps = produced / std::chrono::duration<double>(Clock::now() - t0).count();
  for (double d : decode) r.decode_tps += d;
  return r;
}

int Main(int argc, char** argv) {
  std::string model = "build/bench_models/llama-1b";
  int threads = 2, tokens = 32;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i], v = argv[i + 1];
    if (f == "--model")
      model = v;
    else if (f == "--threads")
      threads = std::stoi(v);
    else if (f == "--tokens")
      tokens = std::stoi(v);
    else {
      std::cerr << "unknown flag " << f << "\n";
      return 2;
    }
  }
  SetComputeThreads(threads);
  // Plans resolve relative paths against their own directory.
  model = std::filesystem::absolute(model).lexically_normal().string();
  if (!std::filesystem::exists(model + "/config.json")) {
    ModelInitOptions o;
    o.arch = Arch::kLlama;
    o.preset = "1b";
    o.out_dir = model;
    std::cerr << "writing llama 1b to " << model << "\n";
    if (!InitModel(o).ok()) return 1;
  }
  auto store = ModelStore::Open(model);
  const int64_t n = (*store)->config().num_layers;
  const int64_t H = (*store)->config().hidden_size;
  std::vector<testing::ClusterPlan> plans = {
      {"two", model, false, {{"device", 0, 1}, {"a", 1, n}}},
      {"three",
       model,
       false,
       {{"device", 0, 1}, {"a", 1, n / 2}, {"b", n / 2, n}}},
      // For concurrency, one server with every block and a device that only
      // embeds: in this one-process bench, device work and a second
      // server's forwards would run on the same two cores as the server
      // being measured (on a real cluster each runs on its own machine).
      {"servers", model, false, {{"device", 0, 0}, {"a", 0, n}}},
  };
  // Monolithic and split runs alternate (best of 5 each) so this
  // machine's drifting memory bandwidth hits them alike.
  StageOptions so;
  so.copy_weights = true;
  auto tok = (*store)->LoadTokenizer();
  auto whole = LocalPipeline::Load(**store, {}, so);
  if (!tok.ok() || !whole.ok()) return 1;
  double mono = 0;
  SplitResult two, three;
  {
    std::vector<testing::ClusterPlan> chain(plans.begin(), plans.begin() + 2);
    auto cluster =
        testing::Cluster::Start(testing::TempDir("split_bench"), chain);
    if (!cluster.ok()) {
      std::cerr << cluster.status() << "\n";
      return 1;
    }
    DeviceAgentOptions o;
    o.controller = (*cluster)->controller_address();
    (*cluster)->SecureDevice("device", &o);
    auto agent = DeviceAgent::Connect(o);
    for (int rep = 0; rep < 5; ++rep) {
      mono = std::max(mono, MonolithicOnce(**whole, **tok, tokens));
      SplitOnce(**agent, "two", tokens, &two);
      SplitOnce(**agent, "three", tokens, &three);
    }
  }
  whole->reset();
  auto cluster =
      testing::Cluster::Start(testing::TempDir("split_bench_c"), {plans[2]});
  if (!cluster.ok()) {
    std::cerr << cluster.status() << "\n";
    return 1;
  }
  DeviceAgentOptions o;
  o.controller = (*cluster)->controller_address();
  (*cluster)->SecureDevice("device", &o);
  auto agent = DeviceAgent::Connect(o);

  std::printf(
      "model %s, %d threads, %d new tokens, loopback, one process; "
      "monolithic and split runs interleaved, best of 5\n\n",
      model.c_str(), threads, tokens);
  std::printf(
      "| setup | decode tok/s | vs monolithic | added ms/token per "
      "hop |\n|---|---|---|---|\n");
  std::printf("| monolithic | %.2f | 1.00 | - |\n", mono);
  for (auto [name, r, hops] : {std::make_tuple("2-stage", &two, 1),
                               std::make_tuple("3-stage", &three, 2)}) {
    const double added = (1e3 / r->tps - 1e3 / mono) / hops;
    std::printf("| %s | %.2f | %.3f | %.2f |\n", name, r->tps, r->tps / mono,
                added);
  }
  std::printf("\nper-hop timings (3-stage, mean per step):\n");
  for (size_t i = 0; i < three.hops.size(); ++i) {
    const auto& h = three.hops[i];
    const double downstream =
        i + 1 < three.hops.size() ? three.hops[i + 1].total_ms : 0;
    std::printf(
        "  %s: compute %.2f ms, total %.2f ms, hop overhead "
        "(total - compute - downstream) %.3f ms\n",
        h.node.c_str(), h.compute_ms, h.total_ms,
        h.total_ms - h.compute_ms - downstream);
  }
  std::printf(
      "\n| sessions | aggregate tok/s (with prefill) | vs 1 | "
      "aggregate decode tok/s | vs 1 |\n|---|---|---|---|---|\n");
  ConcurrentResult one;
  for (int s : {1, 4, 16}) {
    const ConcurrentResult r = Concurrent(**agent, "servers", s, tokens);
    if (s == 1) one = r;
    std::printf("| %d | %.2f | %.2f | %.2f | %.2f |\n", s, r.tps,
                r.tps / one.tps, r.decode_tps, r.decode_tps / one.decode_tps);
    std::fflush(stdout);
  }
  std::printf("\nbatching (all runs):\n");
  for (const std::string& d : (*cluster)->server("a")->host()->Describe()) {
    std::printf("  a: %s\n", d.c_str());
  }
  std::printf(
      "\n| codec | bytes per decoded token (hidden %ld) | vs fp32 "
      "|\n|---|---|---|\n",
      static_cast<long>(H));
  for (v1::Codec c : wire::SupportedCodecs()) {
    std::printf("| %s | %ld | %.2f |\n",
                std::string(wire::CodecName(c)).c_str(),
                static_cast<long>(wire::EncodedBytes(c, 1, H)),
                double(wire::EncodedBytes(c, 1, H)) /
                    wire::EncodedBytes(v1::CODEC_FP32, 1, H));
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
