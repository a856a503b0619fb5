// Helpers of the split-training tests: the single-process reference, the
// training spec they share, windows, routes and adapter comparison.
#ifndef EDGESPLIT_TESTS_TRAINING_UTIL_H_
#define EDGESPLIT_TESTS_TRAINING_UTIL_H_

#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "edgesplit/device_agent.h"
#include "gtest/gtest.h"
#include "proto/training_spec.h"
#include "runtime/model_store.h"
#include "runtime/train/stage_trainer.h"
#include "runtime/train/training_data.h"
#include "testing/cluster.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace testing {

inline std::string RealModel() {
  return testing::SharedDir() + "/models/stories260K";
}

inline v1::TrainingSpec Spec(Arch arch, const std::string& job, int64_t n) {
  v1::TrainingSpec s;
  s.set_job_id(job);
  s.set_rank(4);
  s.set_alpha(8);
  for (const char* t :
       arch == Arch::kGpt2
           ? std::vector<const char*>{"c_attn", "c_proj", "c_fc"}
           : std::vector<const char*>{"q_proj", "k_proj", "v_proj", "o_proj",
                                      "gate_proj", "up_proj", "down_proj"}) {
    s.add_target_modules(t);
  }
  s.set_first_trained_block(0);
  s.set_last_trained_block(n);
  s.set_seed(7);
  v1::OptimizerSpec* o = s.mutable_optimizer();
  o->set_lr(2e-3);
  o->set_beta1(0.9);
  o->set_beta2(0.999);
  o->set_eps(1e-8);
  o->set_warmup_steps(3);
  o->set_total_steps(50);
  o->set_max_grad_norm(0.5);  // Small enough to clip: the global norm counts.
  s.set_devices(1);
  return s;
}

// The same training in one process: the whole model, one trainer.
struct Reference {
  std::unique_ptr<ModelStore> store;
  std::unique_ptr<StageModel> model;
  std::shared_ptr<LoraAdapter> adapter;
  std::unique_ptr<StageTrainer> trainer;
  AdamWOptions adamw;
  uint64_t id = 0;
  int64_t step = 0;

  static std::unique_ptr<Reference> Make(const std::string& dir,
                                         const v1::TrainingSpec& spec,
                                         const StageOptions& options = {}) {
    auto r = std::make_unique<Reference>();
    r->store = *ModelStore::Open(dir);
    const ModelConfig& c = r->store->config();
    r->model =
        *StageModel::Load(*r->store, {{0, c.num_layers}, true, true}, options);
    r->adapter = *LoraAdapter::Create(c, LoraConfigFor(spec, c),
                                      {0, c.num_layers}, spec.seed(), "ref");
    EXPECT_TRUE(r->model->AttachAdapter(r->adapter).ok());
    r->trainer = *StageTrainer::Create(r->model.get(), r->adapter);
    r->adamw = AdamWFor(spec.optimizer());
    return r;
  }
  double ForwardBackward(const std::vector<at::Tensor>& windows) {
    double sum = 0;
    const double scale = 1.0 / windows.size();
    for (const at::Tensor& w : windows) {
      const int64_t n = w.size(0) - 1;
      StageInput in;
      in.tokens = w.slice(0, 0, n);
      auto loss = trainer->ForwardLoss(id, in, w.slice(0, 1, n + 1), scale);
      EXPECT_TRUE(loss.ok()) << loss.status();
      EXPECT_TRUE(trainer->Backward(id++, at::Tensor()).ok());
      sum += *loss;
    }
    return sum / windows.size();
  }
  void Apply() {
    const double norm = std::sqrt(trainer->GradSquaredNorm());
    const double max = adamw.max_grad_norm;
    trainer->Step(adamw, step++, norm > max ? max / norm : 1.0);
  }
};

inline std::vector<at::Tensor> RandomWindows(int64_t vocab, int m, int seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> out;
  for (int i = 0; i < m; ++i) {
    out.push_back(at::randint(vocab, {9 + 2 * ((seed + i) % 3)}, at::kLong));
  }
  return out;
}

// The servers of `plan` as a route (the device is stages[0]).
inline std::vector<v1::Hop> Route(Cluster& c, const ClusterPlan& plan) {
  std::vector<v1::Hop> hops;
  for (size_t i = 1; i < plan.stages.size(); ++i) {
    const auto& [node, a, b] = plan.stages[i];
    if (node == "device") break;  // The U-shaped head.
    v1::Hop h;
    h.set_node(node);
    h.set_address(c.server(node)->address());
    h.set_first_block(a);
    h.set_last_block(b);
    hops.push_back(h);
  }
  return hops;
}

inline std::unique_ptr<DeviceAgent> Agent(const Cluster& c,
                                          const std::string& name) {
  DeviceAgentOptions o;
  o.controller = c.controller_address();
  o.device_name = name;
  c.SecureDevice(name, &o);
  o.report_profile = false;
  o.generation_timeout = absl::Seconds(120);
  auto a = DeviceAgent::Connect(o);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? std::move(*a) : nullptr;
}

inline std::vector<std::vector<int32_t>> ToWindows(
    const std::vector<at::Tensor>& w) {
  std::vector<std::vector<int32_t>> out;
  for (const at::Tensor& t : w) {
    out.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  }
  return out;
}

// Every tensor of two PEFT adapter directories, their largest difference.
inline double AdapterDiff(const std::string& a, const std::string& b,
                          const ModelConfig& config) {
  auto x = LoraAdapter::LoadPeft(a, config, "x");
  auto y = LoraAdapter::LoadPeft(b, config, "y");
  EXPECT_TRUE(x.ok()) << x.status();
  EXPECT_TRUE(y.ok()) << y.status();
  if (!x.ok() || !y.ok()) return 1e9;
  EXPECT_EQ((*x)->modules().size(), (*y)->modules().size());
  double worst = 0;
  for (const auto& [module, f] : (*x)->modules()) {
    const LoraFactors* g = (*y)->Find(module);
    if (g == nullptr) return 1e9;
    worst = std::max({worst, (f.a - g->a).abs().max().item<double>(),
                      (f.b - g->b).abs().max().item<double>()});
  }
  return worst;
}

// Windows of a text file, tokenized by the model's tokenizer.
inline TrainingData Shakespeare(const ModelStore& store, int64_t bytes,
                                int64_t seq) {
  const std::string dir = testing::TempDir("train_text");
  std::ifstream in(testing::SharedDir() + "/data/tinyshakespeare.txt");
  std::string text(static_cast<size_t>(bytes), '\0');
  in.read(text.data(), bytes);
  text.resize(static_cast<size_t>(in.gcount()));
  std::ofstream(dir + "/text.txt") << text;
  auto tok = store.LoadTokenizer();
  EXPECT_TRUE(tok.ok());
  TrainingDataOptions o;
  o.sequence_tokens = seq;
  o.held_out_fraction = 0.1;
  auto data = LoadTrainingData(dir + "/text.txt", **tok, o);
  EXPECT_TRUE(data.ok()) << data.status();
  return *std::move(data);
}

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTS_TRAINING_UTIL_H_
