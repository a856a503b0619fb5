// Speculative decoding through the split over emulated device links, in
// one run (ratios against plain split decoding on the same link):
// decode tokens/s with a q8_0 and a q4_0 self-draft, prompt lookup on a
// repetitive text and a deliberately poor draft (a random model sharing
// the vocabulary), greedy and (q8_0) sampled; acceptance rate, tokens per
// verification step, bytes per token up and down; and q8_0 over a plan
// that gives the device zero blocks (the first server embeds: token ids go
// up, the device holds only its draft).
//
//   spec_bench [--model ../shared/models/stories260K] [--tokens 128]
//              [--reps 5] [--threads 1]
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "edgesplit/device_agent.h"
#include "runtime/model_init.h"
#include "runtime/model_store.h"
#include "runtime/threading.h"
#include "testing/cluster.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

const char kStory[] =
    "Once upon a time, there was a little girl named Lily. She loved to "
    "play with her red ball in the park.";
const char kPlainPrompt[] = "Once upon a time";

struct Link {
  const char* name;
  double rtt_ms, mbit_s;
};

GenerationStats Once(DeviceAgent& agent, const std::string& model_id,
                     const std::string& prompt, const SamplingOptions& s) {
  auto session = agent.OpenSession(model_id);
  if (!session.ok()) {
    std::cerr << session.status() << "\n";
    std::exit(1);
  }
  auto st = (*session)->Generate(prompt, s);
  if (!st.ok()) {
    std::cerr << s.speculative.draft << ": " << st.status() << "\n";
    std::exit(1);
  }
  return *st;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Plain and speculative generations alternate, `reps` pairs; medians of
// each one's tokens/s and of the per-pair ratios (the emulated link and
// this VM drift between minutes, not within a pair).
struct Pair {
  double plain_tps = 0, tps = 0, ratio = 0;
  GenerationStats plain, stats;  // The last of each.
};

Pair Measure(DeviceAgent& agent, const std::string& model_id,
             const std::string& prompt, const SamplingOptions& plain,
             const SamplingOptions& spec, int reps) {
  std::vector<double> a, b, ratio;
  Pair out;
  for (int r = 0; r < reps; ++r) {
    out.plain = Once(agent, model_id, prompt, plain);
    out.stats = Once(agent, model_id, prompt, spec);
    a.push_back(out.plain.decode_tokens_per_s);
    b.push_back(out.stats.decode_tokens_per_s);
    ratio.push_back(b.back() / a.back());
  }
  out.plain_tps = Median(a);
  out.tps = Median(b);
  out.ratio = Median(ratio);
  return out;
}

int Main(int argc, char** argv) {
  std::string model = testing::SharedDir() + "/models/stories260K";
  int tokens = 128, reps = 5, threads = 1;
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
  const ModelConfig& config = (*store)->config();
  const int64_t n = config.num_layers;
  // The poor draft: a random model with the same vocabulary.
  const std::string tmp = testing::TempDir("spec_bench");
  ModelInitOptions poor;
  poor.arch = Arch::kLlama;
  poor.preset = "tiny";
  poor.out_dir = tmp + "/poor";
  if (!InitModel(poor).ok()) return 1;
  std::string repetitive = kStory;
  repetitive += " ";
  repetitive += kStory;
  repetitive += " Once upon a time, there was";

  struct Draft {
    const char* name;
    std::string draft;
    bool repetitive_prompt;
    bool zero_device_blocks = false;  // Model "z", not "m".
    float skip = 0;  // Uncertainty skip threshold (approximate).
  };
  std::vector<Draft> drafts = {
      {"q8_0 self-draft", "self:q8_0", false},
      {"q4_0 self-draft", "self:q4_0", false},
      {"prompt lookup", "lookup", true},
      {"poor draft", poor.out_dir, false},
      {"q8_0, 0 device blocks", "self:q8_0", false, true},
      {"q8_0, skip >= 0.6 (approx.)", "self:q8_0", false, false, 0.6f},
  };
  if (config.vocab_size != 512) {
    // The random draft has the tiny preset's 512 tokens.
    std::printf("(no poor draft: the model's vocabulary is %lld tokens)\n",
                static_cast<long long>(config.vocab_size));
    drafts.erase(drafts.begin() + 3);
  }
  std::printf(
      "model %s, %d tokens, median of %d pairs, device [0, 1) -> a [1, %lld) "
      "-> "
      "b [%lld, %lld) + head (0 device blocks: a [0, %lld)); servers 1 ms "
      "apart\n",
      model.c_str(), tokens, reps, static_cast<long long>(n / 2),
      static_cast<long long>(n / 2), static_cast<long long>(n),
      static_cast<long long>(n / 2));
  std::printf("%-10s %-30s %9s %9s %7s %8s %9s %11s %11s\n", "link", "draft",
              "tok/s", "plain", "ratio", "accept", "tok/step", "up B/t",
              "down B/t");
  std::printf("%-10s %-30s %9s %9s %7s %8s %9s %11s %11s\n", "", "", "", "", "",
              "", "", "spec/plain", "spec/plain");
  for (const Link& link :
       {Link{"30ms/20M", 30, 20}, Link{"10ms/100M", 10, 100}}) {
    testing::ClusterOptions options;
    const double bytes_per_s = link.mbit_s * 1e6 / 8;
    options.device_links["a"] = testing::LinkSpec{
        bytes_per_s, bytes_per_s, absl::Microseconds(link.rtt_ms * 500)};
    options.peer_links["b"] = testing::LinkSpec{0, 0, absl::Microseconds(500)};
    auto c = testing::Cluster::Start(
        testing::TempDir(absl::StrCat("spec_bench_", link.rtt_ms)),
        {{"m",
          model,
          false,
          {{"device", 0, 1}, {"a", 1, n / 2}, {"b", n / 2, n}}},
         {"z",
          model,
          false,
          {{"device", 0, 0}, {"a", 0, n / 2}, {"b", n / 2, n}}}},
        options);
    if (!c.ok()) {
      std::cerr << c.status() << "\n";
      return 1;
    }
    DeviceAgentOptions o;
    o.controller = (*c)->controller_address();
    (*c)->SecureDevice("device", &o);
    o.threads = threads;
    o.generation_timeout = absl::Minutes(10);
    auto agent = DeviceAgent::Connect(o);
    if (!agent.ok()) {
      std::cerr << agent.status() << "\n";
      return 1;
    }
    for (bool sampled : {false, true}) {
      SamplingOptions s;
      s.temperature = sampled ? 0.8f : 0.0f;
      s.top_k = sampled ? 40 : 0;
      s.seed = 11;
      s.max_new_tokens = tokens;
      s.stop_at_eos = false;
      for (const Draft& d : drafts) {
        if (sampled && d.draft != "self:q8_0") continue;
        SamplingOptions sd = s;
        sd.speculative.draft = d.draft;
        sd.speculative.skip_threshold = d.skip;
        const std::string prompt =
            d.repetitive_prompt ? repetitive : std::string(kPlainPrompt);
        const Pair r = Measure(**agent, d.zero_device_blocks ? "z" : "m",
                               prompt, s, sd, reps);
        const GenerationStats& st = r.stats;
        const GenerationStats& p = r.plain;
        const double toks = static_cast<double>(st.tokens.size());
        const double plain_toks = static_cast<double>(p.tokens.size());
        std::printf(
            "%-10s %-30s %9.1f %9.1f %6.2fx %7.0f%% %9.2f %6.0f/%-4.0f "
            "%6.0f/%-4.0f\n",
            link.name,
            (std::string(d.name) + (sampled ? ", T=0.8" : "")).c_str(), r.tps,
            r.plain_tps, r.ratio,
            st.drafted_tokens > 0
                ? 100.0 * st.accepted_tokens / st.drafted_tokens
                : 0.0,
            toks / std::max(st.steps + 1, 1), st.bytes_sent / toks,
            p.bytes_sent / plain_toks, st.bytes_received / toks,
            p.bytes_received / plain_toks);
        if (d.skip > 0) {
          std::printf(
              "%-10s   %.0f%% of tokens unverified; verification would have "
              "kept %.1f%% of them; %d target steps (plain %d)\n",
              "", 100.0 * st.skipped_tokens / toks, 100.0 * st.skip_agreement,
              st.steps, p.steps);
        }
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
