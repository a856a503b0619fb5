// Single-process prefill and decode throughput against the memory-bandwidth
// floor: decoding one token reads every weight once, so tokens/s can't beat
// (GEMV bandwidth) / (weight bytes read per token). Prints a Markdown table,
// with weights computed from the file mapping and from private copies.
//
//   decode_bench [--threads 2] [--models gpt2-small,llama-1b,real]
//                [--dir build/bench_models] [--prefill 128] [--decode 32]
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "runtime/generator.h"
#include "runtime/model_init.h"
#include "runtime/model_store.h"
#include "runtime/threading.h"
#include "runtime/weight_layout.h"

namespace edgesplit {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Bandwidth of the decode path's own op (at::linear on one row) over a
// weight matrix far larger than the caches.
double GemvBandwidth() {
  at::Tensor w = at::randn({8192, 4096});
  at::Tensor x = at::randn({1, 4096});
  at::Tensor y = at::linear(x, w);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = Clock::now();
    for (int i = 0; i < 10; ++i) y = at::linear(x, w);
    best = std::max(best, 10.0 * w.nbytes() / Seconds(t0));
  }
  return best;
}

// Bytes of weights one decode step reads: every block and the head; of
// the embeddings only one row (negligible).
int64_t WeightBytesPerToken(const ModelConfig& c) {
  const int64_t elem = 4;  // fp32 compute.
  int64_t params = c.num_layers * c.ParamsPerBlock() + c.HeadParams();
  if (c.tie_word_embeddings) params += c.vocab_size * c.hidden_size;
  return params * elem;
}

struct Timing {
  double prefill_tps = 0, decode_tps = 0;
};

// Best-of-`reps` prefill and decode throughput of one pipeline.
absl::StatusOr<Timing> Time(const LocalPipeline& pipeline,
                            const std::vector<int32_t>& prompt, int decode,
                            int reps) {
  double best_prefill = 1e30, best_decode = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    auto seq = pipeline.NewSequence();
    auto t0 = Clock::now();
    ES_ASSIGN_OR_RETURN(std::vector<float> logits, seq->Forward(prompt));
    best_prefill = std::min(best_prefill, Seconds(t0));
    int32_t next = 0;
    t0 = Clock::now();
    for (int i = 0; i < decode; ++i) {
      next = static_cast<int32_t>(
          std::max_element(logits.begin(), logits.end()) - logits.begin());
      ES_ASSIGN_OR_RETURN(logits, seq->Forward({&next, 1}));
    }
    best_decode = std::min(best_decode, Seconds(t0));
  }
  return Timing{prompt.size() / best_prefill, decode / best_decode};
}

// Measures the model with weights memory-mapped and copied, interleaving
// the two so machine noise hits both alike, plus the GEMV bandwidth.
int MeasureModel(const std::string& name, const std::string& dir, int prefill,
                 int decode) {
  auto store = ModelStore::Open(dir);
  if (!store.ok()) {
    std::cerr << name << ": " << store.status() << "\n";
    return 1;
  }
  const ModelConfig& c = (*store)->config();
  StageOptions mapped_opts, copied_opts;
  copied_opts.copy_weights = true;
  auto mapped = LocalPipeline::Load(**store, {}, mapped_opts);
  auto copied = LocalPipeline::Load(**store, {}, copied_opts);
  if (!mapped.ok() || !copied.ok()) {
    std::cerr << name << ": load failed\n";
    return 1;
  }
  std::vector<int32_t> prompt(prefill);
  for (int i = 0; i < prefill; ++i) prompt[i] = (i * 7919 + 13) % c.vocab_size;
  Timing best[2];
  double bw = 0;
  for (int round = 0; round < 3; ++round) {
    bw = std::max(bw, GemvBandwidth());
    for (int m = 0; m < 2; ++m) {
      auto t = Time(m == 0 ? **mapped : **copied, prompt, decode, 1);
      if (!t.ok()) {
        std::cerr << name << ": " << t.status() << "\n";
        return 1;
      }
      best[m].prefill_tps = std::max(best[m].prefill_tps, t->prefill_tps);
      best[m].decode_tps = std::max(best[m].decode_tps, t->decode_tps);
    }
  }
  const double floor_tps = bw / WeightBytesPerToken(c);
  for (int m = 0; m < 2; ++m) {
    std::printf("| %s | %.1fM | %s | %.1f | %.2f | %.2f | %.0f%% |\n",
                name.c_str(), c.TotalParams() / 1e6,
                m == 0 ? "mapped" : "copied", best[m].prefill_tps,
                best[m].decode_tps, floor_tps,
                100.0 * best[m].decode_tps / floor_tps);
  }
  std::fflush(stdout);
  return 0;
}

int Main(int argc, char** argv) {
  int threads = 2, prefill = 128, decode = 32;
  std::string models = "gpt2-small,llama-1b,real";
  std::string dir = "build/bench_models";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i], v = argv[i + 1];
    if (f == "--threads")
      threads = std::stoi(v);
    else if (f == "--models")
      models = v;
    else if (f == "--dir")
      dir = v;
    else if (f == "--prefill")
      prefill = std::stoi(v);
    else if (f == "--decode")
      decode = std::stoi(v);
    else {
      std::cerr << "unknown flag " << f << "\n";
      return 2;
    }
  }
  SetComputeThreads(threads);
  std::printf(
      "threads: %d; GEMV bandwidth = best at::linear over a 128 MiB "
      "fp32 matrix, measured between runs; floor = bandwidth / "
      "weight bytes per token\n\n",
      threads);
  std::printf(
      "| model | params | weights | prefill tok/s (%d) | decode "
      "tok/s | floor tok/s | decode / floor |\n"
      "|---|---|---|---|---|---|---|\n",
      prefill);
  for (absl::string_view m : absl::StrSplit(models, ',')) {
    std::string name(m), path;
    if (name == "real") {
      path = "../shared/models/stories260K";
    } else {
      const bool gpt2 = name.rfind("gpt2-", 0) == 0;
      ModelInitOptions o;
      o.arch = gpt2 ? Arch::kGpt2 : Arch::kLlama;
      o.preset = name.substr(name.find('-') + 1);
      o.out_dir = dir + "/" + name;
      path = o.out_dir;
      if (!std::filesystem::exists(path + "/config.json")) {
        std::cerr << "writing " << name << " to " << path << "\n";
        absl::Status s = InitModel(o);
        if (!s.ok()) {
          std::cerr << s << "\n";
          return 1;
        }
      }
    }
    if (MeasureModel(name, path, prefill, decode) != 0) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
