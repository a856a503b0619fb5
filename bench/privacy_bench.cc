// What a curious server learns from a private device's activations, and
// what the privacy costs, for split inference of the real model:
//
//  * leakage: an inversion attacker -- an MLP mapping the rows the server
//    receives (each row with its two neighbours) back to token ids -- is
//    trained on public text (the first half of the TinyStories sample),
//    with the device's mechanism applied to its training rows at the same
//    noise level (it knows the mechanism), and scored on held-out text (the
//    second half): the fraction of tokens it recovers;
//  * utility: held-out perplexity of the model run through the noisy split
//    (teacher-forced; the servers' blocks and head see the noisy rows).
//
// For cut layers 1 and 2 (device blocks [0, k)) and ε per generation of
// `--rows` rows (δ = 1e-5, the calibration edgesplit applies: each row
// clipped to C and noised with σ·C, σ from RowNoiseForEpsilon). C is the
// median row norm at the cut on the public half (a public calibration).
// Majority-class accuracy (always guessing the most frequent public token)
// is the floor an attacker that learned nothing gets.
//
// And for private split fine-tuning (U-shaped, device block 0 frozen, LoRA
// on the servers' blocks, through a loopback cluster): held-out
// Shakespeare perplexity before training, after training without privacy,
// and after training at each epsilon (per training window, δ = 1e-5) --
// the exported adapter run without noise, and the split evaluated through
// the noisy release -- with the share of the non-private improvement kept
// (of the row "off" above it: "+blk0"/"+sgd" rows train the device's
// block 0 too, "+sgd" under DP-SGD at the same epsilon per window).
//
//   privacy_bench [--model DIR] [--threads 2] [--rows 128]
//                 [--attack-steps 1500] [--train-steps 60]
//                 [--sections attack,train]
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "edgesplit/device_agent.h"
#include "privacy/row_noise.h"
#include "runtime/lora.h"
#include "runtime/model_store.h"
#include "runtime/stage_model.h"
#include "runtime/threading.h"
#include "runtime/train/training_data.h"
#include "testing/cluster.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

constexpr int64_t kWindow = 128;

using bench::Flag;
using bench::Must;

// Windows of kWindow + 1 ids (tokens and their next-token labels) from the
// text's paragraphs, each story starting with BOS.
std::vector<std::vector<int32_t>> Windows(const Tokenizer& tok,
                                          const std::string& text) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("Once upon", 0) == 0 && tok.bos_id() >= 0) {
      ids.push_back(tok.bos_id());
    }
    auto e = Must(tok.Encode(line + "\n"), "encode");
    ids.insert(ids.end(), e.begin(), e.end());
  }
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i + kWindow + 1 <= ids.size(); i += kWindow) {
    out.emplace_back(ids.begin() + i, ids.begin() + i + kWindow + 1);
  }
  return out;
}

// Rows at the cut ([T, hidden]) of one window's tokens.
at::Tensor CutRows(const StageModel& device, const std::vector<int32_t>& w) {
  auto cache = device.NewCache(nullptr);
  StageInput in;
  in.sequences = {{cache.get(), kWindow}};
  in.tokens =
      at::tensor(std::vector<int64_t>(w.begin(), w.end() - 1), at::kLong);
  return Must(device.Forward(in), "device forward").to(at::kFloat).contiguous();
}

// The mechanism edgesplit's device applies (sigma 0: off).
// (sigma 0: off; negative: clipped only, no noise).
at::Tensor Privatize(at::Tensor rows, double clip, double sigma,
                     privacy::NoiseSource& noise) {
  if (sigma == 0) return rows;
  rows = rows.clone();
  privacy::ClipRows(rows.data_ptr<float>(), rows.size(0), rows.size(1), clip);
  if (sigma < 0) return rows;
  privacy::AddGaussianNoise(rows.data_ptr<float>(), rows.numel(), sigma * clip,
                            noise);
  return rows;
}

// Each row with its neighbours ([T, 3·hidden], zeros past the ends): what
// an attacker who sees the whole sequence can use.
at::Tensor WithNeighbours(const at::Tensor& rows) {
  at::Tensor z = at::zeros({1, rows.size(1)});
  at::Tensor prev = at::cat({z, rows.slice(0, 0, rows.size(0) - 1)});
  at::Tensor next = at::cat({rows.slice(0, 1), z});
  return at::cat({prev, rows, next}, 1);
}

struct AttackResult {
  double accuracy = 0;
};

double Attack(const std::vector<at::Tensor>& public_rows,
              const std::vector<at::Tensor>& public_ids,
              const std::vector<at::Tensor>& private_rows,
              const std::vector<at::Tensor>& private_ids, double clip,
              double sigma, int64_t vocab, int steps, uint64_t seed) {
  torch::manual_seed(seed);
  auto noise = privacy::NoiseSource::Seeded(seed);
  const int64_t d = public_rows[0].size(1) * 3;
  torch::nn::Sequential mlp(torch::nn::Linear(d, 512), torch::nn::ReLU(),
                            torch::nn::Linear(512, 512), torch::nn::ReLU(),
                            torch::nn::Linear(512, vocab));
  torch::optim::Adam opt(mlp->parameters(), torch::optim::AdamOptions(1e-3));
  const int per_batch = 4;  // Windows per step: 512 rows.
  for (int s = 0; s < steps; ++s) {
    std::vector<at::Tensor> xs, ys;
    for (int b = 0; b < per_batch; ++b) {
      const size_t w = (s * per_batch + b) % public_rows.size();
      xs.push_back(
          WithNeighbours(Privatize(public_rows[w], clip, sigma, *noise)));
      ys.push_back(public_ids[w]);
    }
    at::Tensor loss = torch::nn::functional::cross_entropy(
        mlp->forward(at::cat(xs)), at::cat(ys));
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  torch::NoGradGuard no_grad;
  int64_t right = 0, total = 0;
  for (size_t w = 0; w < private_rows.size(); ++w) {
    at::Tensor x =
        WithNeighbours(Privatize(private_rows[w], clip, sigma, *noise));
    at::Tensor guess = mlp->forward(x).argmax(1);
    right += (guess == private_ids[w]).sum().item<int64_t>();
    total += private_ids[w].numel();
  }
  return static_cast<double>(right) / total;
}

// A linear MMSE (Wiener) denoiser from public statistics of the clipped
// rows: x̂ = μ + Σ(Σ + s²I)⁻¹(y − μ). Post-processing of the release: costs
// no privacy; the first server could apply it before its blocks.
struct Denoiser {
  at::Tensor mean, gain;  // [d], [d, d] (applied as (y − μ)·gainᵀ).
  at::Tensor Apply(const at::Tensor& y) const {
    if (!gain.defined()) return y;
    return mean + at::matmul(y - mean, gain.t());
  }
};

Denoiser FitDenoiser(const std::vector<at::Tensor>& public_rows, double clip,
                     double sigma) {
  if (sigma <= 0) return {};
  at::Tensor x = at::cat(public_rows).to(at::kDouble).clone();
  at::Tensor norms = x.norm(2, 1, true);
  x = x * at::clamp_max(clip / norms, 1.0);
  at::Tensor mean = x.mean(0);
  at::Tensor xc = x - mean;
  at::Tensor cov = at::matmul(xc.t(), xc) / x.size(0);
  const double s2 = sigma * sigma * clip * clip;
  at::Tensor gain = at::matmul(
      cov, at::inverse(cov + s2 * at::eye(cov.size(0), at::kDouble)));
  return {mean.to(at::kFloat), gain.to(at::kFloat)};
}

// Mean NLL per token of the held-out windows through the noisy split.
double Perplexity(const StageModel& rest, const std::vector<at::Tensor>& rows,
                  const std::vector<std::vector<int32_t>>& windows, double clip,
                  double sigma, uint64_t seed, const Denoiser& denoiser = {}) {
  auto noise = privacy::NoiseSource::Seeded(seed);
  double nll = 0;
  int64_t n = 0;
  for (size_t w = 0; w < rows.size(); ++w) {
    auto cache = rest.NewCache(nullptr);
    StageInput in;
    in.sequences = {{cache.get(), kWindow}};
    in.hidden = denoiser.Apply(Privatize(rows[w], clip, sigma, *noise));
    at::Tensor logits = Must(rest.Forward(in), "rest forward");
    std::vector<int64_t> labels(windows[w].begin() + 1, windows[w].end());
    at::Tensor l = at::log_softmax(logits.to(at::kFloat), 1);
    at::Tensor y = at::tensor(labels, at::kLong);
    nll -= l.gather(1, y.unsqueeze(1)).sum().item<double>();
    n += kWindow;
  }
  return std::exp(nll / n);
}

// Mean NLL per labelled token of `windows` through the whole model in one
// process, with the PEFT adapter in `adapter_dir` ("" none): no noise.
double CleanPerplexity(const ModelStore& store,
                       const std::vector<std::vector<int32_t>>& windows,
                       const std::string& adapter_dir) {
  const ModelConfig& c = store.config();
  auto whole = Must(StageModel::Load(store, {{0, c.num_layers}, true, true}),
                    "whole model");
  std::unique_ptr<LoraAdapter> adapter;
  if (!adapter_dir.empty()) {
    adapter = Must(LoraAdapter::LoadPeft(adapter_dir, c, "bench"), "adapter");
  }
  double nll = 0;
  int64_t n = 0;
  for (const auto& w : windows) {
    const int64_t t = static_cast<int64_t>(w.size()) - 1;
    auto cache = whole->NewCache(nullptr);
    StageInput in;
    in.sequences = {{cache.get(), t}};
    in.tokens =
        at::tensor(std::vector<int64_t>(w.begin(), w.end() - 1), at::kLong);
    if (adapter) in.sequence_adapters = {adapter.get()};
    at::Tensor l =
        at::log_softmax(Must(whole->Forward(in), "forward").to(at::kFloat), 1);
    at::Tensor y =
        at::tensor(std::vector<int64_t>(w.begin() + 1, w.end()), at::kLong);
    nll -= l.gather(1, y.unsqueeze(1)).sum().item<double>();
    n += t;
  }
  return std::exp(nll / n);
}

void TrainSection(const std::string& dir, int steps) {
  auto store = Must(ModelStore::Open(dir), "model");
  auto tok = Must(store->LoadTokenizer(), "tokenizer");
  auto data = bench::Shakespeare(*tok, 256, 48);
  const std::string tmp = testing::TempDir("privacy_bench");
  testing::ClusterOptions co;
  co.tls = false;
  co.profile = false;
  auto cluster =
      Must(testing::Cluster::Start(
               tmp,
               {{"u",
                 dir,
                 true,
                 {{"device", 0, 1}, {"a", 1, store->config().num_layers}}}},
               co),
           "cluster");
  DeviceAgentOptions ao;
  ao.controller = cluster->controller_address();
  ao.insecure = true;
  ao.report_profile = false;
  auto agent = Must(DeviceAgent::Connect(ao), "agent");
  TrainingRunOptions run;
  run.steps = steps;
  run.eval_windows = data.held_out;
  run.eval_every = steps;
  run.checkpoint_every = 0;
  run.max_resumes = 0;  // No failures here: no replay allowance.
  for (const auto& b : BatchByLength(data.train, 8 * 65)) {
    auto& batch = run.batches.emplace_back();
    for (size_t i : b) batch.push_back(data.train[i]);
  }
  const double before = CleanPerplexity(*store, data.held_out, "");
  std::printf(
      "\nsplit fine-tuning on Shakespeare: %zu windows of 64 tokens in %zu "
      "batches, %d steps (each window used ~%.0f times), LoRA rank 8 on "
      "blocks [1, %ld); held-out perplexity before: %.2f\n"
      "  %-12s %-8s %-10s %-14s %-12s %-10s\n",
      data.train.size(), run.batches.size(), steps,
      double(steps) / run.batches.size(),
      static_cast<long>(store->config().num_layers), before, "epsilon", "sigma",
      "eps spent", "after (clean)", "via noise", "kept");
  // Rows: the cut's epsilon; with "+ block 0" the device's block trains
  // too, under DP-SGD at the same epsilon per window (clip: about the
  // median per-window gradient norm of its factors, measured once).
  struct Row {
    double eps;
    bool device_trains;
  };
  double improvement = 0;
  for (const Row& row : std::vector<Row>{{0, false},
                                         {1000, false},
                                         {100, false},
                                         {32, false},
                                         {8, false},
                                         {0, true},
                                         {100, true},
                                         {32, true},
                                         {8, true}}) {
    const double eps = row.eps;
    TrainingOptions t;
    t.job_id = absl::StrCat("bench-", eps, row.device_trains ? "-dev" : "");
    t.u_shaped = true;
    t.first_trained_block = row.device_trains ? 0 : 1;
    t.rank = 8;
    t.lr = 3e-3;
    t.total_steps = steps;
    t.privacy.epsilon = eps;
    t.privacy.clip = 3.4;  // About the median row norm at this cut.
    t.privacy.grad_clip = 0.01;
    if (row.device_trains && eps > 0) {
      t.device_privacy.epsilon = eps;
      t.device_privacy.clip = 0.05;
    }
    auto trainer = Must(agent->StartTraining("u", t), "start training");
    double via_noise = 0;
    TrainingRunCallbacks cb;
    cb.on_eval = [&](int64_t, double loss) { via_noise = std::exp(loss); };
    auto r = Must(trainer->Run(run, cb), "run");
    const std::string out = absl::StrCat(tmp, "/adapter-", t.job_id);
    if (auto s = trainer->Export(out); !s.ok()) {
      std::cerr << "export: " << s << "\n";
      std::exit(1);
    }
    const double after = CleanPerplexity(*store, data.held_out, out);
    if (eps == 0) improvement = before - after;
    std::string label = eps == 0 ? "off" : absl::StrCat(eps);
    if (row.device_trains) {
      label += eps == 0 ? " +blk0" : " +sgd";
    }
    std::printf(
        "  %-12s %-8.3g %-10.3g %-14.2f %-12.2f %-10s %s\n", label.c_str(),
        r.noise_multiplier, r.privacy_epsilon_spent, after, via_noise,
        absl::StrFormat("%.0f%%", 100 * (before - after) / improvement).c_str(),
        row.device_trains && eps > 0
            ? absl::StrFormat("DP-SGD sigma %.3g, %d/%d clipped",
                              r.device_noise_multiplier, r.device_clipped,
                              r.device_examples)
                  .c_str()
            : "");
    std::fflush(stdout);
  }
}

int Main(int argc, char** argv) {
  const std::string dir =
      Flag(argc, argv, "model", testing::SharedDir() + "/models/stories260K");
  SetComputeThreads(std::stoi(Flag(argc, argv, "threads", "2")));
  const int64_t gen_rows = std::stoll(Flag(argc, argv, "rows", "128"));
  const int steps = std::stoi(Flag(argc, argv, "attack-steps", "1500"));
  const std::string sections = Flag(argc, argv, "sections", "attack,train");
  if (sections.find("train") != std::string::npos) {
    TrainSection(dir, std::stoi(Flag(argc, argv, "train-steps", "60")));
  }
  if (sections.find("attack") == std::string::npos) return 0;
  auto store = Must(ModelStore::Open(dir), "model");
  auto tok = Must(store->LoadTokenizer(), "tokenizer");
  const ModelConfig& c = store->config();
  std::ifstream f(testing::SharedDir() + "/data/tinystories_valid_sample.txt");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  const size_t half = text.find("\n\n", text.size() / 2);
  auto pub = Windows(*tok, text.substr(0, half));
  auto priv = Windows(*tok, text.substr(half));
  priv.resize(std::min<size_t>(priv.size(), 200));
  std::vector<at::Tensor> pub_ids, priv_ids;
  std::vector<int64_t> counts(c.vocab_size, 0);
  for (const auto& w : pub) {
    pub_ids.push_back(at::tensor(std::vector<int64_t>(w.begin(), w.end() - 1)));
    for (size_t i = 0; i + 1 < w.size(); ++i) ++counts[w[i]];
  }
  const int64_t majority =
      std::max_element(counts.begin(), counts.end()) - counts.begin();
  int64_t majority_right = 0, priv_total = 0;
  for (const auto& w : priv) {
    priv_ids.push_back(
        at::tensor(std::vector<int64_t>(w.begin(), w.end() - 1)));
    for (size_t i = 0; i + 1 < w.size(); ++i)
      majority_right += w[i] == majority;
    priv_total += kWindow;
  }
  // What knowing nothing but public token frequencies gives.
  double unigram_nll = 0;
  int64_t public_total = 0;
  for (int64_t k : counts) public_total += k;
  for (const auto& w : priv) {
    for (size_t i = 1; i < w.size(); ++i) {
      unigram_nll -= std::log((counts[w[i]] + 1.0) /
                              (public_total + double(c.vocab_size)));
    }
  }
  std::printf(
      "privacy_bench: %s, public %zu windows, held-out %zu windows of %ld "
      "tokens; epsilon per generation of %ld rows at delta 1e-5\n"
      "floors: majority-token attack accuracy %.1f%%, unigram perplexity "
      "%.1f\n",
      dir.c_str(), pub.size(), priv.size(), static_cast<long>(kWindow),
      static_cast<long>(gen_rows), 100.0 * majority_right / priv_total,
      std::exp(unigram_nll / priv_total));
  // 0: off; -1: clipped without noise.
  const std::vector<double> epsilons = {0, -1, 1000, 100, 32, 8, 2};
  for (int64_t cut : {1, 2}) {
    auto device =
        Must(StageModel::Load(*store, {{0, cut}, true, false}), "device stage");
    auto rest = Must(
        StageModel::Load(*store, {{cut, c.num_layers}, false, true}), "rest");
    std::vector<at::Tensor> pub_rows, priv_rows;
    std::vector<float> norms;
    for (const auto& w : pub) {
      pub_rows.push_back(CutRows(*device, w));
      at::Tensor nr = pub_rows.back().norm(2, 1);
      norms.insert(norms.end(), nr.data_ptr<float>(),
                   nr.data_ptr<float>() + nr.numel());
    }
    for (const auto& w : priv) priv_rows.push_back(CutRows(*device, w));
    std::nth_element(norms.begin(), norms.begin() + norms.size() / 2,
                     norms.end());
    const double clip = norms[norms.size() / 2];
    std::printf(
        "\ncut after block %ld (clip C = %.2f, the public median row norm)\n"
        "  %-10s %-8s %-18s %-12s %-12s\n",
        static_cast<long>(cut), clip, "epsilon", "sigma", "attack accuracy",
        "perplexity", "denoised");
    for (double eps : epsilons) {
      const double sigma =
          eps <= 0
              ? eps
              : Must(privacy::RowNoiseForEpsilon(eps, 1e-5, gen_rows), "sigma");
      const double acc = Attack(pub_rows, pub_ids, priv_rows, priv_ids, clip,
                                sigma, c.vocab_size, steps, 17);
      const double ppl = Perplexity(*rest, priv_rows, priv, clip, sigma, 23);
      const double denoised =
          Perplexity(*rest, priv_rows, priv, clip, sigma, 23,
                     FitDenoiser(pub_rows, clip, sigma));
      std::printf("  %-10s %-8.3g %-18s %-12.3f %-12.3f\n",
                  eps == 0  ? "off"
                  : eps < 0 ? "clip only"
                            : absl::StrCat(eps).c_str(),
                  std::max(sigma, 0.0),
                  absl::StrFormat("%.1f%%", 100 * acc).c_str(), ppl, denoised);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
