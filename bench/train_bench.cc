// Split LoRA training on loopback, in one run (ratios, not absolute
// times):
//  1. training samples/s of the whole model in one process vs 2- and
//     3-stage splits through edge servers (runs interleaved; medians);
//  2. bytes per optimizer step on each link (counted by relays in front of
//     the servers);
//  3. pipeline efficiency of 1F1B with m micro-batches against the ideal
//     1 - (p - 1) / (m + p - 1): servers emulate slower machines (their
//     training compute sleeps `--slowdown` x as long) so p stages can run at
//     once on this machine's cores; efficiency = T(one micro-batch at a
//     time) / (p x T(pipelined)).
//  4. QLoRA: weight memory and samples/s of training over
//     a q8_0 / q4_0 base against float32, in one process.
//
//   train_bench [--model DIR] [--threads 1] [--steps 2] [--seq 32]
//               [--micro-batches 4] [--slowdown 4] [--sections 1234]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "device_agent/split_trainer.h"
#include "proto/training_spec.h"
#include "runtime/model_init.h"
#include "runtime/model_store.h"
#include "runtime/threading.h"
#include "testing/cluster.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using Clock = std::chrono::steady_clock;
using Stages = std::vector<std::tuple<std::string, int64_t, int64_t>>;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::cerr << what << ": " << s << "\n";
    std::exit(1);
  }
}

v1::TrainingSpec Spec(const ModelConfig& c, const std::string& job) {
  v1::TrainingSpec s;
  s.set_job_id(job);
  s.set_rank(8);
  s.set_alpha(16);
  for (const char* t :
       c.arch == Arch::kGpt2
           ? std::vector<const char*>{"c_attn", "c_proj", "c_fc"}
           : std::vector<const char*>{"q_proj", "k_proj", "v_proj", "o_proj",
                                      "gate_proj", "up_proj", "down_proj"}) {
    s.add_target_modules(t);
  }
  s.set_last_trained_block(c.num_layers);
  v1::OptimizerSpec* o = s.mutable_optimizer();
  o->set_lr(1e-4);
  o->set_beta1(0.9);
  o->set_beta2(0.999);
  o->set_eps(1e-8);
  o->set_max_grad_norm(1.0);
  s.set_devices(1);
  return s;
}

std::vector<at::Tensor> Windows(int64_t vocab, int m, int64_t seq, int step) {
  at::manual_seed(step);
  std::vector<at::Tensor> w;
  for (int i = 0; i < m; ++i) w.push_back(at::randint(vocab, {seq + 1}));
  return w;
}

struct MonoRun {
  double samples_per_s = 0;
  int64_t weight_bytes = 0;  // The stage's weights as held.
};

// The whole model in this process: samples/s over `steps` steps, with
// the base weights as `weights` (QLoRA when quantized).
MonoRun Monolithic(const ModelStore& store, int steps, int m, int64_t seq,
                   std::optional<kernels::WeightType> weights = {}) {
  const ModelConfig& c = store.config();
  StageOptions so;
  so.weights = weights;
  auto model = StageModel::Load(store, {{0, c.num_layers}, true, true}, so);
  Check(model.status(), "load");
  const v1::TrainingSpec spec = Spec(c, "mono");
  std::shared_ptr<LoraAdapter> adapter = *LoraAdapter::Create(
      c, LoraConfigFor(spec, c), {0, c.num_layers}, 0, "mono");
  Check((*model)->AttachAdapter(adapter), "attach");
  auto trainer = StageTrainer::Create(model->get(), adapter);
  const AdamWOptions o = AdamWFor(spec.optimizer());
  uint64_t id = 0;
  const auto start = Clock::now();
  for (int step = 0; step < steps; ++step) {
    for (const at::Tensor& w : Windows(c.vocab_size, m, seq, step)) {
      StageInput in;
      in.tokens = w.slice(0, 0, seq);
      Check((*trainer)
                ->ForwardLoss(id, in, w.slice(0, 1, seq + 1), 1.0 / m)
                .status(),
            "forward");
      Check((*trainer)->Backward(id++, at::Tensor()).status(), "backward");
    }
    const double norm = std::sqrt((*trainer)->GradSquaredNorm());
    (*trainer)->Step(o, step, norm > 1 ? 1 / norm : 1);
  }
  MonoRun r;
  r.samples_per_s = steps * m / Seconds(start);
  r.weight_bytes = (*model)->WeightBytes();
  return r;
}

// A split over a cluster of `stages` (device first).
struct Split {
  std::unique_ptr<testing::Cluster> cluster;
  std::unique_ptr<StageModel> local;
  std::unique_ptr<StageStubCache> stubs;
  std::unique_ptr<SplitTrainer> trainer;
  std::vector<std::string> servers;
};

std::unique_ptr<Split> StartSplit(const ModelStore& store,
                                  const std::string& model,
                                  const Stages& stages, const std::string& name,
                                  bool relays) {
  auto s = std::make_unique<Split>();
  testing::ClusterOptions co;
  co.profile = false;
  for (size_t i = 1; i < stages.size(); ++i) {
    const std::string& node = std::get<0>(stages[i]);
    s->servers.push_back(node);
    // Unlimited relays: they only count the bytes.
    if (relays) (i == 1 ? co.device_links : co.peer_links)[node] = {};
  }
  auto c = testing::Cluster::Start(testing::TempDir(name),
                                   {{"m", model, false, stages}}, co);
  Check(c.status(), "cluster");
  s->cluster = *std::move(c);
  s->stubs = std::make_unique<StageStubCache>(
      256 << 20, s->cluster->DeviceSecurity("device"));
  const int64_t k = std::get<2>(stages[0]);
  s->local = *StageModel::Load(store, {{0, k}, true, false});
  SplitTrainerOptions so;
  so.session_id = name;
  so.model_id = "m";
  so.spec = Spec(store.config(), name);
  for (size_t i = 1; i < stages.size(); ++i) {
    const auto& [node, a, b] = stages[i];
    v1::Hop h;
    h.set_node(node);
    testing::LinkEmulator* relay = s->cluster->link(node);
    h.set_address(i == 1 && relay != nullptr
                      ? relay->address()
                      : s->cluster->server(node)->address());
    testing::LinkEmulator* peer = s->cluster->peer_link(node);
    if (peer != nullptr) h.set_peer_address(peer->address());
    h.set_first_block(a);
    h.set_last_block(b);
    so.route.push_back(h);
  }
  so.grant = s->cluster->Grant(so.session_id, so.model_id, so.route, so.codec,
                               false, so.spec.job_id());
  auto t = SplitTrainer::Open(
      s->local.get(), nullptr,
      *s->stubs->Get(so.route[0].address(), so.route[0].node()), so);
  Check(t.status(), "open");
  s->trainer = *std::move(t);
  return s;
}

// Samples/s over `steps` steps (`m` micro-batches each, pipelined), or
// with `one_at_a_time` each micro-batch's forward and backward before the
// next one's.
double RunSplit(Split& s, int steps, int m, int64_t seq, int vocab,
                bool one_at_a_time = false) {
  const auto start = Clock::now();
  for (int step = 0; step < steps; ++step) {
    const auto w = Windows(vocab, m, seq, step);
    if (one_at_a_time) {
      for (const at::Tensor& x : w) {
        Check(s.trainer->ForwardBackward({x}).status(), "step");
      }
    } else {
      Check(s.trainer->ForwardBackward(w).status(), "step");
    }
    Check(s.trainer->ApplyStep(false).status(), "apply");
  }
  return steps * m / Seconds(start);
}

// Servers' stages over blocks [1, n) and the head, balanced by weight: a
// block counts 1, the head V / (12 h) blocks (its V x h matmul against a
// block's ~12 h^2 weights).
Stages Balanced(const ModelConfig& c, int p) {
  const int64_t n = c.num_layers;
  const double head =
      static_cast<double>(c.vocab_size) / (12.0 * c.hidden_size);
  const double total = static_cast<double>(n - 1) + head;
  Stages st = {{"device", 0, 1}};
  int64_t first = 1;
  double done = 0;
  for (int i = 0; i < p; ++i) {
    int64_t last = first;
    if (i == p - 1) {
      last = n;
    } else {
      const double target = total * (i + 1) / p;
      // At least one block each; leave one per later stage.
      while (last < n - (p - 1 - i) &&
             (last == first || done + (last - first) + 0.5 <= target)) {
        ++last;
      }
    }
    done += static_cast<double>(last - first);
    st.emplace_back(std::string(1, static_cast<char>('a' + i)), first, last);
    first = last;
  }
  return st;
}

std::string Describe(const Stages& st) {
  std::string out;
  for (const auto& [node, a, b] : st) {
    absl::StrAppend(&out, out.empty() ? "" : " + ", node, " [", a, ",", b, ")");
  }
  return out + " + head";
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) {
  using namespace edgesplit;
  std::string model = "build/bench_models/gpt2-small";
  // One thread per stage: two stages on two cores run side by side as on
  // two machines (with more, their BLAS pools spin against each other).
  int threads = 1, steps = 2, m = 4, slowdown = 4;
  int64_t seq = 32;
  std::string sections = "1234";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--model")
      model = v;
    else if (f == "--threads")
      threads = std::stoi(v);
    else if (f == "--steps")
      steps = std::stoi(v);
    else if (f == "--seq")
      seq = std::stoll(v);
    else if (f == "--micro-batches")
      m = std::stoi(v);
    else if (f == "--slowdown")
      slowdown = std::stoi(v);
    else if (f == "--sections")
      sections = v;
    else {
      std::cerr << "unknown flag " << f << "\n";
      return 2;
    }
  }
  SetComputeThreads(threads);
  model = std::filesystem::absolute(model).lexically_normal().string();
  if (!std::filesystem::exists(model + "/config.json")) {
    ModelInitOptions o;
    o.arch = Arch::kGpt2;
    o.preset = "small";
    o.out_dir = model;
    std::cerr << "writing gpt2 small to " << model << "\n";
    Check(InitModel(o), "model init");
  }
  auto store = ModelStore::Open(model);
  Check(store.status(), "model");
  const ModelConfig& c = (*store)->config();
  const int64_t n = c.num_layers, h = c.hidden_size;
  std::printf(
      "compute threads per process: %d (every stage is one "
      "process's worth: its own thread pool)\n",
      threads);
  std::printf(
      "model %s: %lld blocks, hidden %lld; LoRA r=8 on every linear;"
      " %d micro-batches x %lld tokens per step\n\n",
      model.c_str(), (long long)n, (long long)h, m, (long long)seq);

  if (sections.find_first_of("12") != std::string::npos) {
    // 1. Throughput: whole vs 2 and 3 stages, interleaved.
    const Stages two = Balanced(c, 1);
    const Stages three = Balanced(c, 2);
    auto s2 = StartSplit(**store, model, two, "train2", true);
    auto s3 = StartSplit(**store, model, three, "train3", true);
    std::vector<double> mono, t2, t3;
    RunSplit(*s2, 1, m, seq, c.vocab_size);  // Warm-up.
    RunSplit(*s3, 1, m, seq, c.vocab_size);
    const int64_t a_up0 = s3->cluster->link("a")->bytes_up(),
                  a_down0 = s3->cluster->link("a")->bytes_down(),
                  b_up0 = s3->cluster->peer_link("b")->bytes_up(),
                  b_down0 = s3->cluster->peer_link("b")->bytes_down();
    int steps3 = 0;
    for (int rep = 0; rep < 3; ++rep) {
      mono.push_back(Monolithic(**store, steps, m, seq).samples_per_s);
      t2.push_back(RunSplit(*s2, steps, m, seq, c.vocab_size));
      t3.push_back(RunSplit(*s3, steps, m, seq, c.vocab_size));
      steps3 += steps;
    }
    std::printf(
        "| setup | samples/s (median of 3) | vs monolithic |\n"
        "|---|---|---|\n");
    const double base = Median(mono);
    std::printf("| monolithic (1 process) | %.2f | 1.00 |\n", base);
    std::printf("| 2 stages: %s | %.2f | %.2f |\n", Describe(two).c_str(),
                Median(t2), Median(t2) / base);
    std::printf("| 3 stages: %s | %.2f | %.2f |\n\n", Describe(three).c_str(),
                Median(t3), Median(t3) / base);

    // 2. Bytes per step per link (3 stages).
    auto per_step = [&](int64_t now, int64_t then) {
      return static_cast<double>(now - then) / steps3 / 1024.0;
    };
    const double act = static_cast<double>(m * seq * h * 4) / 1024.0;
    std::printf(
        "| link (3 stages, fp32) | KiB/step up | KiB/step down | "
        "activations m x seq x hidden x 4 B |\n|---|---|---|---|\n");
    std::printf("| device -> a | %.1f | %.1f | %.1f |\n",
                per_step(s3->cluster->link("a")->bytes_up(), a_up0),
                per_step(s3->cluster->link("a")->bytes_down(), a_down0), act);
    std::printf("| a -> b | %.1f | %.1f | %.1f |\n\n",
                per_step(s3->cluster->peer_link("b")->bytes_up(), b_up0),
                per_step(s3->cluster->peer_link("b")->bytes_down(), b_down0),
                act);
    s2.reset();
    s3.reset();
  }
  if (sections.find('3') != std::string::npos) {
    // 3. Pipeline efficiency with emulated slower servers.
    std::printf(
        "| servers p | micro-batches m | T one-at-a-time / step (s) | "
        "T 1F1B / step (s) | efficiency | ideal 1-(p-1)/(m+p-1) |\n"
        "|---|---|---|---|---|---|\n");
    for (int p : {2, 3}) {
      const Stages st = Balanced(c, p);
      std::printf("| %s |||||\n", Describe(st).c_str());
      auto s =
          StartSplit(**store, model, st, "pipe" + std::to_string(p), false);
      for (const std::string& node : s->servers) {
        s->cluster->server(node)->host()->SetComputeSlowdown(slowdown);
      }
      RunSplit(*s, 1, 2, seq, c.vocab_size);  // Warm-up.
      for (int mb : {m, 2 * m}) {
        std::vector<double> seq_t, pipe_t;
        for (int rep = 0; rep < 2; ++rep) {
          seq_t.push_back(mb / RunSplit(*s, 1, mb, seq, c.vocab_size, true));
          pipe_t.push_back(mb / RunSplit(*s, 1, mb, seq, c.vocab_size));
        }
        // The faster of two runs each (the machine's drift only slows).
        const double ts = *std::min_element(seq_t.begin(), seq_t.end());
        const double tp = *std::min_element(pipe_t.begin(), pipe_t.end());
        std::printf("| %d | %d | %.2f | %.2f | %.2f | %.2f |\n", p, mb, ts, tp,
                    ts / (p * tp), 1.0 - (p - 1.0) / (mb + p - 1.0));
      }
    }
  }
  if (sections.find('4') != std::string::npos) {
    // 4. QLoRA: the same LoRA training over a frozen quantized base, in one
    // process: weight memory and speed against float32 weights.
    std::printf(
        "\n| base weights | weight MiB (embeddings stay f32) | samples/s "
        "(median of 3) | vs f32 |\n|---|---|---|---|\n");
    double f32_rate = 0;
    for (kernels::WeightType t :
         {kernels::WeightType::kF32, kernels::WeightType::kQ8_0,
          kernels::WeightType::kQ4_0}) {
      std::vector<double> rates;
      MonoRun last;
      for (int rep = 0; rep < 3; ++rep) {
        last = Monolithic(**store, steps, m, seq, t);
        rates.push_back(last.samples_per_s);
      }
      const double rate = Median(rates);
      if (t == kernels::WeightType::kF32) f32_rate = rate;
      std::printf("| %s | %.1f | %.2f | %.2f |\n", kernels::WeightTypeName(t),
                  last.weight_bytes / 1048576.0, rate, rate / f32_rate);
    }
  }
  return 0;
}
