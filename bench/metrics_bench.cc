// What the metrics cost: the counting an edge server does for one session
// step at a middle hop (ServerMetrics, exactly the calls the session,
// batcher and wire paths make, message sizes included) against the same
// step's compute unmetered (a one-token forward of stories260K's blocks
// [1, 3) on a 1-token KV cache, one thread), in one run; and a scrape
// (Registry::Render of a server's registry after the work) against
// Prometheus' default 15 s interval.
//
//   metrics_bench [--steps N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "edge_server/server_metrics.h"
#include "edgesplit/v1/stage.pb.h"
#include "ops/metrics.h"
#include "runtime/model_store.h"
#include "runtime/stage_model.h"
#include "runtime/threading.h"

namespace edgesplit {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One middle-hop step's counting, as the server does it.
void CountStep(const ServerMetrics& m, const v1::StageRequest& in,
               const v1::StageResponse& out) {
  m.Bytes("in", v1::CODEC_FP32, in.ByteSizeLong());  // Received
  m.batch.queue_seconds->Observe(20e-6);             // Batcher
  m.batch.batch_items->Observe(1);
  m.batch.tokens->Increment(1);
  m.batch.forward_seconds->Observe(300e-6);
  m.Bytes("out", v1::CODEC_FP32, in.ByteSizeLong());  // ToNext
  m.Bytes("in", v1::CODEC_FP32, out.ByteSizeLong());  // its answer
  m.next_hop_seconds->Observe(1e-3);
  m.step_seconds->Observe(1.5e-3);
  m.Bytes("out", v1::CODEC_FP32, out.ByteSizeLong());  // Respond
}

int Main(int argc, char** argv) {
  int steps = 200000;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::atoi(argv[++i]);
  }
  SetComputeThreads(1);
  metrics::Registry registry;
  metrics::AddProcessMetrics(&registry);
  ServerMetrics m(&registry);
  v1::StageRequest in;
  in.mutable_forward()->set_step(7);
  in.mutable_forward()->mutable_hidden()->mutable_data()->assign(64 * 4, 'x');
  v1::StageResponse out;
  out.mutable_forward()->set_step(7);
  out.mutable_forward()->mutable_output()->mutable_data()->assign(512 * 4, 'y');

  for (int i = 0; i < 1000; ++i) CountStep(m, in, out);  // Warm up.
  auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) CountStep(m, in, out);
  const double count_s = Seconds(t0) / steps;

  const std::string dir = "../shared/models/stories260K";
  auto store = ModelStore::Open(dir);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  auto stage = StageModel::Load(**store, {{1, 3}, false, false});
  if (!stage.ok()) {
    std::fprintf(stderr, "%s\n", std::string(stage.status().message()).c_str());
    return 1;
  }
  const int64_t hidden = (*store)->config().hidden_size;
  const int forwards = 2000;
  double forward_s = 0;
  {
    auto cache = (*stage)->NewCache(nullptr);
    StageInput x;
    x.sequences = {{cache.get(), 1}};
    x.hidden = at::randn({1, hidden});
    for (int i = 0; i < 50; ++i) {  // Warm up, then keep the cache short.
      auto y = (*stage)->Forward(x);
      if (!y.ok()) {
        std::fprintf(stderr, "%s\n", std::string(y.status().message()).c_str());
        return 1;
      }
      cache->Truncate(0);
    }
    t0 = Clock::now();
    for (int i = 0; i < forwards; ++i) {
      (void)(*stage)->Forward(x);
      cache->Truncate(0);
    }
    forward_s = Seconds(t0) / forwards;
  }

  const int scrapes = 200;
  t0 = Clock::now();
  size_t bytes = 0;
  for (int i = 0; i < scrapes; ++i) bytes = registry.Render().size();
  const double render_s = Seconds(t0) / scrapes;

  std::printf("metrics cost (one run, 1 thread)\n");
  std::printf("%-46s %12s\n", "what", "value");
  std::printf("%-46s %10.0f ns\n", "counting of one middle-hop step",
              count_s * 1e9);
  std::printf("%-46s %10.1f us\n",
              "the step's forward, stories260K [1,3), 1 token",
              forward_s * 1e6);
  std::printf("%-46s %11.4f\n", "counting / forward", count_s / forward_s);
  std::printf("%-46s %10.1f us\n", "one scrape (Render), server registry",
              render_s * 1e6);
  std::printf("%-46s %10zu B\n", "scrape size", bytes);
  std::printf("%-46s %11.2e\n", "scrape time / 15 s interval", render_s / 15);
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
