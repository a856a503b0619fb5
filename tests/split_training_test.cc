// Split fine-tuning end to end on loopback: controller + edge servers (real
// gRPC) + the device's trainer. Split must equal whole: the loss and every
// LoRA gradient of a 3-stage (or U-shaped) split step equal a single-process
// step, for both architectures, and after 50 pipelined steps the adapter
// assembled from every hop equals the single-process one. Also: a stage
// killed mid-training resumes from the last checkpoint, split federated
// learning with three devices, and the real model fine-tuned across hops.
#include <atomic>
#include <cmath>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "device_agent/cli/commands.h"
#include "device_agent/split_trainer.h"
#include "edgesplit/device_agent.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/protocol.h"
#include "proto/tensor_codec.h"
#include "proto/training_spec.h"
#include "runtime/model_store.h"
#include "runtime/test_models.h"
#include "runtime/training_data.h"
#include "tests/cluster.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::Cluster;
using ::edgesplit::testing::ClusterPlan;

std::string RealModel() { return testing::SharedDir() + "/models/stories260K"; }

v1::TrainingSpec Spec(Arch arch, const std::string& job, int64_t n) {
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
                                         const v1::TrainingSpec& spec) {
    auto r = std::make_unique<Reference>();
    r->store = *ModelStore::Open(dir);
    const ModelConfig& c = r->store->config();
    r->model = *StageModel::Load(*r->store, {{0, c.num_layers}, true, true});
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

std::vector<at::Tensor> RandomWindows(int64_t vocab, int m, int seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> out;
  for (int i = 0; i < m; ++i) {
    out.push_back(at::randint(vocab, {9 + 2 * ((seed + i) % 3)}, at::kLong));
  }
  return out;
}

// The servers of `plan` as a route (the device is stages[0]).
std::vector<v1::Hop> Route(Cluster& c, const ClusterPlan& plan) {
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

// 50 split steps against the single-process steps: losses and the global
// norm every step, every gradient at the first and last step, the adapter
// at the end. Blocks before `first_trained` stay frozen.
void ExpectSplitEqualsWhole(Arch arch, bool u_shaped, int64_t first_trained,
                            bool recompute) {
  const std::string dir = testing::TinyModel(arch);
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const ModelConfig& config = (*store)->config();
  const int64_t n = config.num_layers;
  ASSERT_GE(n, 4);
  // device [0,1) -> a [1,3) -> b [3,n) + head, or U-shaped:
  // device [0,1) -> a [1,2) -> b [2,n) -> device head.
  ClusterPlan plan{
      "m", dir, u_shaped,
      u_shaped
          ? std::vector<std::tuple<std::string, int64_t, int64_t>>{{"device", 0,
                                                                    1},
                                                                   {"a", 1, 2},
                                                                   {"b", 2, n}}
          : std::vector<std::tuple<std::string, int64_t, int64_t>>{
                {"device", 0, 1}, {"a", 1, 3}, {"b", 3, n}}};
  auto c = Cluster::Start(testing::TempDir("train_equal"), {plan});
  ASSERT_TRUE(c.ok()) << c.status();

  v1::TrainingSpec spec = Spec(arch, "equal", n);
  spec.set_first_trained_block(first_trained);
  spec.set_recompute(recompute);
  auto ref = Reference::Make(dir, spec);
  auto local = StageModel::Load(**store, {{0, 1}, true, false});
  ASSERT_TRUE(local.ok());
  std::unique_ptr<StageModel> head;
  if (u_shaped) head = *StageModel::Load(**store, {{n, n}, false, true});
  SplitTrainerOptions so;
  so.session_id = "equal";
  so.model_id = "m";
  so.spec = spec;
  so.route = Route(**c, plan);
  StageStubCache stubs(64 << 20);
  auto split = SplitTrainer::Open(local->get(), head.get(),
                                  stubs.Get(so.route[0].address()), so);
  ASSERT_TRUE(split.ok()) << split.status();
  // A device whose blocks are frozen runs forward only.
  EXPECT_EQ((*split)->device_trains(), first_trained == 0);

  for (int step = 0; step < 50; ++step) {
    // Four micro-batches of different lengths, pipelined through the hops.
    const auto windows = RandomWindows(config.vocab_size, 4, step);
    const double want = ref->ForwardBackward(windows);
    auto got = (*split)->ForwardBackward(windows);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_NEAR(got->loss, want, 1e-5) << "step " << step;
    if (step == 0 || step == 49) {
      // Every LoRA gradient, gathered from every hop.
      AdapterTensors factors, grads;
      ASSERT_TRUE((*split)->Export(&factors, &grads).ok());
      const auto ref_grads = ref->trainer->Gradients();
      ASSERT_EQ(grads.size(), ref_grads.size());
      for (const auto& [name, g] : ref_grads) {
        const auto it = grads.find(PeftTensorName(name));
        ASSERT_NE(it, grads.end()) << name;
        EXPECT_LE((it->second - g).abs().max().item<double>(), 1e-5)
            << name << " at step " << step;
      }
    }
    // The global norm summed along the chain is the whole model's.
    const double ref_norm = std::sqrt(ref->trainer->GradSquaredNorm());
    ref->Apply();
    auto applied = (*split)->ApplyStep(false);
    ASSERT_TRUE(applied.ok()) << applied.status();
    EXPECT_NEAR(applied->grad_norm, ref_norm, 1e-5 * (1 + ref_norm));
  }
  // After 50 updates the assembled adapter is the single-process one.
  AdapterTensors factors;
  ASSERT_TRUE((*split)->Export(&factors, nullptr).ok());
  int compared = 0;
  for (const auto& [module, f] : ref->adapter->modules()) {
    for (auto [which, t] :
         {std::pair<const char*, const at::Tensor*>{"lora_A", &f.a},
          {"lora_B", &f.b}}) {
      const auto it =
          factors.find(PeftTensorName(absl::StrCat(module, ".", which)));
      ASSERT_NE(it, factors.end()) << module;
      EXPECT_LE((it->second - *t).abs().max().item<double>(), 1e-5)
          << module << "." << which;
      ++compared;
    }
  }
  EXPECT_EQ(compared, static_cast<int>(factors.size()));
  EXPECT_GT(compared, 0);
}

class SplitTrainingTest
    : public ::testing::TestWithParam<std::tuple<Arch, bool>> {};

// (Llama's stages recompute their activations at backward; GPT-2's keep
// them.)
TEST_P(SplitTrainingTest, StepsEqualSingleProcessSteps) {
  const auto [arch, u_shaped] = GetParam();
  ExpectSplitEqualsWhole(arch, u_shaped, 0, arch == Arch::kLlama);
}

// The freezing ratio: blocks [0, 2) frozen, so the device (block 0) only
// runs forward and server a trains block 2 of its [1, 3).
TEST(SplitTrainingFreezeTest, FrozenBlocksStillEqualTheWholeModel) {
  ExpectSplitEqualsWhole(Arch::kGpt2, false, 2, false);
}

INSTANTIATE_TEST_SUITE_P(
    BothArchitectures, SplitTrainingTest,
    ::testing::Combine(::testing::Values(Arch::kGpt2, Arch::kLlama),
                       ::testing::Bool()),
    [](const auto& info) {
      return std::string(ArchName(std::get<0>(info.param))) +
             (std::get<1>(info.param) ? "_u_shaped" : "_three_stages");
    });

std::unique_ptr<DeviceAgent> Agent(const Cluster& c, const std::string& name) {
  DeviceAgentOptions o;
  o.controller = c.controller_address();
  o.device_name = name;
  o.report_profile = false;
  o.generation_timeout = absl::Seconds(120);
  auto a = DeviceAgent::Connect(o);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? std::move(*a) : nullptr;
}

std::vector<std::vector<int32_t>> ToWindows(const std::vector<at::Tensor>& w) {
  std::vector<std::vector<int32_t>> out;
  for (const at::Tensor& t : w) {
    out.emplace_back(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  }
  return out;
}

// Every tensor of two PEFT adapter directories, their largest difference.
double AdapterDiff(const std::string& a, const std::string& b,
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

TEST(SplitTrainingResumeTest, StageKilledMidTrainingResumesFromCheckpoint) {
  const std::string dir = testing::TinyModel(Arch::kGpt2);
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const ModelConfig& config = (*store)->config();
  const int64_t n = config.num_layers;
  const std::string tmp = testing::TempDir("train_resume");
  ClusterPlan plan{
      "m", dir, false, {{"device", 0, 1}, {"a", 1, 2}, {"b", 2, n}}};
  auto c = Cluster::Start(tmp, {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  auto agent = Agent(**c, "phone");
  constexpr int kSteps = 10, kEvery = 4;
  int total_resumes = 0;

  // Steps from `windows(step)`, checkpointing every kEvery updates; the
  // hook runs before each step.
  auto train = [&](const std::string& job,
                   const std::function<void(int)>& before) -> std::string {
    TrainingOptions o;
    o.job_id = job;
    o.rank = 4;
    o.lr = 5e-3;
    o.seed = 3;
    o.checkpoint_dir = tmp + "/device-checkpoints";
    auto t = agent->StartTraining("m", o);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return "";
    int resumes = 0;
    for (int step = 0; step < kSteps;) {
      before(step);
      auto st = (*t)->Step(ToWindows(RandomWindows(config.vocab_size, 3, step)),
                           (step + 1) % kEvery == 0);
      if (st.ok()) {
        ++step;
        continue;
      }
      // The killed hop: UNAVAILABLE (or CANCELLED as its streams end).
      EXPECT_LT(++resumes, 3) << st.status();
      if (resumes >= 3) return "";
      auto from = (*t)->Resume(absl::Seconds(60));
      EXPECT_TRUE(from.ok()) << from.status();
      if (!from.ok()) return "";
      EXPECT_EQ(*from % kEvery, 0);  // A checkpoint, not where it failed.
      EXPECT_LE(*from, step);
      step = static_cast<int>(*from);
      ++total_resumes;
    }
    const std::string out = absl::StrCat(tmp, "/", job, "-adapter");
    EXPECT_TRUE((*t)->Export(out).ok());
    return out;
  };

  const std::string straight = train("straight", [](int) {});
  std::atomic<bool> killed{false};
  std::thread killer;
  const std::string resumed = train("resumed", [&](int step) {
    if (step == 6 && !killed.exchange(true)) {
      // Mid-step: the server dies while step 6's micro-batches are in
      // flight, then comes back (same name, same checkpoint directory).
      // (b computes 50x slower now, so the kill lands inside the step.)
      (*c)->server("b")->host()->SetComputeSlowdown(50);
      killer = std::thread([&] {
        absl::SleepFor(absl::Milliseconds(20));
        (*c)->Kill("b");
        ASSERT_TRUE((*c)->Restart("b").ok());
      });
    }
  });
  if (killer.joinable()) killer.join();
  ASSERT_TRUE(killed.load());
  EXPECT_GE(total_resumes, 1);
  ASSERT_FALSE(straight.empty());
  ASSERT_FALSE(resumed.empty());
  // Resumed from update 4, the run ends where the uninterrupted one does:
  // no update lost, none applied twice, no shard corrupted.
  EXPECT_LE(AdapterDiff(straight, resumed, config), 1e-6);
}

// Windows of a text file, tokenized by the model's tokenizer.
TrainingData Shakespeare(const ModelStore& store, int64_t bytes, int64_t seq) {
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

TEST(SplitFederatedTest, ThreeDevicesAverageTheirAdaptersAndLearn) {
  const std::string dir = RealModel();
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const TrainingData data = Shakespeare(**store, 60000, 32);
  std::vector<std::vector<int32_t>> eval(data.held_out.begin(),
                                         data.held_out.begin() + 16);
  ClusterPlan plan{"real", dir, false, {{"device", 0, 1}, {"a", 1, 5}}};
  auto c = Cluster::Start(testing::TempDir("train_sfl"), {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  constexpr int kDevices = 3, kSteps = 16, kEvery = 4, kBatch = 4;
  std::vector<std::unique_ptr<DeviceAgent>> agents;
  std::vector<std::unique_ptr<Trainer>> trainers(kDevices);
  for (int d = 0; d < kDevices; ++d) {
    agents.push_back(Agent(**c, absl::StrCat("phone-", d)));
  }
  TrainingOptions o;
  o.job_id = "sfl";
  o.mode = "sfl";
  o.devices = kDevices;
  o.rank = 8;
  o.lr = 1e-2;
  o.warmup_steps = 2;
  o.total_steps = kSteps;
  for (int d = 0; d < kDevices; ++d) {
    auto t = agents[d]->StartTraining("real", o);
    ASSERT_TRUE(t.ok()) << t.status();
    trainers[d] = *std::move(t);
  }
  auto before = trainers[0]->Evaluate(eval);
  ASSERT_TRUE(before.ok()) << before.status();
  std::vector<absl::Status> errors(kDevices);
  std::vector<std::thread> threads;
  for (int d = 0; d < kDevices; ++d) {
    threads.emplace_back([&, d] {
      // Device d trains on its own shard: windows d, d + 3, d + 6, ...
      size_t next = d;
      for (int step = 0; step < kSteps; ++step) {
        std::vector<std::vector<int32_t>> batch;
        for (int i = 0; i < kBatch; ++i) {
          batch.push_back(data.train[next % data.train.size()]);
          next += kDevices;
        }
        auto st = trainers[d]->Step(batch);
        if (!st.ok()) {
          errors[d] = st.status();
          return;
        }
        if ((step + 1) % kEvery == 0) {
          absl::Status s = trainers[d]->AverageDeviceAdapter(kEvery * kBatch);
          if (!s.ok()) {
            errors[d] = s;
            return;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& e : errors) ASSERT_TRUE(e.ok()) << e;
  auto after = trainers[0]->Evaluate(eval);
  ASSERT_TRUE(after.ok()) << after.status();
  std::printf("SFL, 3 devices: held-out loss %.3f -> %.3f\n", *before, *after);
  EXPECT_LT(*after, *before - 0.1);
  // After the last round every device holds the same (averaged) device
  // adapter, and they share the server's: the three exports are equal.
  const std::string tmp = testing::TempDir("train_sfl_out");
  for (int d = 0; d < kDevices; ++d) {
    ASSERT_TRUE(trainers[d]->Export(absl::StrCat(tmp, "/", d)).ok());
  }
  EXPECT_EQ(AdapterDiff(tmp + "/0", tmp + "/1", (*store)->config()), 0);
  EXPECT_EQ(AdapterDiff(tmp + "/0", tmp + "/2", (*store)->config()), 0);
}

TEST(SplitTrainingRealModelTest, FineTunesAcrossHopsAndExportsPeft) {
  const std::string dir = RealModel();
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const ModelConfig& config = (*store)->config();
  const TrainingData data = Shakespeare(**store, 60000, 64);
  ASSERT_GE(data.held_out.size(), 16u);
  std::vector<std::vector<int32_t>> eval(data.held_out.begin(),
                                         data.held_out.begin() + 16);
  ClusterPlan plan{
      "real", dir, false, {{"device", 0, 1}, {"a", 1, 3}, {"b", 3, 5}}};
  auto c = Cluster::Start(testing::TempDir("train_real"), {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  auto agent = Agent(**c, "phone");
  TrainingOptions o;
  o.job_id = "shakespeare";
  o.rank = 8;
  o.lr = 1e-2;
  o.warmup_steps = 5;
  o.total_steps = 60;
  auto t = agent->StartTraining("real", o);
  ASSERT_TRUE(t.ok()) << t.status();
  auto before = (*t)->Evaluate(eval);
  ASSERT_TRUE(before.ok()) << before.status();
  const auto batches = BatchByLength(data.train, 256);
  for (int step = 0; step < o.total_steps; ++step) {
    std::vector<std::vector<int32_t>> batch;
    for (size_t i : batches[step % batches.size()]) {
      batch.push_back(data.train[i]);
    }
    auto st = (*t)->Step(batch);
    ASSERT_TRUE(st.ok()) << st.status();
  }
  auto after = (*t)->Evaluate(eval);
  ASSERT_TRUE(after.ok()) << after.status();
  std::printf("3 hops: held-out perplexity %.2f -> %.2f\n", std::exp(*before),
              std::exp(*after));
  EXPECT_LT(std::exp(*after), 0.5 * std::exp(*before));

  // The exported PEFT adapter computes, in one process, what the split
  // trained model computes across the hops...
  const std::string out = testing::TempDir("train_real_out") + "/adapter";
  ASSERT_TRUE((*t)->Export(out).ok());
  auto whole = StageModel::Load(**store, {{0, config.num_layers}, true, true});
  ASSERT_TRUE(whole.ok());
  std::shared_ptr<LoraAdapter> adapter =
      *LoraAdapter::LoadPeft(out, config, "exported");
  ASSERT_TRUE((*whole)->AttachAdapter(adapter).ok());
  auto mono = StageTrainer::Create(whole->get(), adapter);
  ASSERT_TRUE(mono.ok());
  double sum = 0;
  int64_t tokens = 0;
  for (const auto& w : eval) {
    StageInput in;
    in.tokens =
        at::tensor(std::vector<int64_t>(w.begin(), w.end() - 1), at::kLong);
    at::Tensor labels =
        at::tensor(std::vector<int64_t>(w.begin() + 1, w.end()), at::kLong);
    auto loss = (*mono)->EvaluateLoss(in, labels);
    ASSERT_TRUE(loss.ok());
    sum += *loss * labels.size(0);
    tokens += labels.size(0);
  }
  EXPECT_NEAR(sum / tokens, *after, 1e-5);

  // ... and `edgesplit generate --adapter` loads it: its greedy text is
  // the trained model's (argmax of the adapted logits, step by step).
  std::ostringstream text, err;
  ASSERT_EQ(cli::Run({"generate", "--model", dir, "--adapter", out, "--prompt",
                      "ROMEO:", "--temperature", "0", "--max-new-tokens", "12"},
                     text, err),
            0)
      << err.str();
  auto tok = (*store)->LoadTokenizer();
  std::vector<int32_t> ids = *(*tok)->EncodePrompt("ROMEO:");
  for (int i = 0; i < 12; ++i) {
    StageInput in;
    in.tokens =
        at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong);
    auto logits = (*mono)->Evaluate(in);
    ASSERT_TRUE(logits.ok());
    ids.push_back(static_cast<int32_t>(
        (*logits)[logits->size(0) - 1].argmax().item<int64_t>()));
  }
  const std::vector<int32_t> generated(ids.end() - 12, ids.end());
  auto want = (*tok)->Decode(generated);
  ASSERT_TRUE(want.ok());
  std::string got = text.str();
  if (!got.empty() && got.back() == '\n') got.pop_back();
  ASSERT_FALSE(got.empty());
  // (The CLI stops at EOS; the loop above does not.)
  EXPECT_EQ(want->substr(0, got.size()), got);
  // The base model says something else.
  std::ostringstream base;
  ASSERT_EQ(cli::Run({"generate", "--model", dir, "--prompt",
                      "ROMEO:", "--temperature", "0", "--max-new-tokens", "12"},
                     base, err),
            0);
  EXPECT_NE(base.str(), text.str());
}

TEST(TrainCommandTest, TrainsResumesAndExports) {
  const std::string dir = RealModel();
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string tmp = testing::TempDir("train_cli");
  {
    std::ifstream in(testing::SharedDir() + "/data/tinyshakespeare.txt");
    std::string text(30000, '\0');
    in.read(text.data(), text.size());
    text.resize(static_cast<size_t>(in.gcount()));
    std::ofstream(tmp + "/text.txt") << text;
  }
  ClusterPlan plan{"real", dir, true, {{"device", 0, 1}, {"a", 1, 5}}};
  auto c = Cluster::Start(tmp, {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<std::string> common = {"--controller",
                                           (*c)->controller_address(),
                                           "--model-id",
                                           "real",
                                           "--data",
                                           tmp + "/text.txt",
                                           "--checkpoint-dir",
                                           tmp + "/ckpt",
                                           "--job",
                                           "cli",
                                           "--lr",
                                           "1e-2",
                                           "--seq-len",
                                           "32",
                                           "--batch-tokens",
                                           "128",
                                           "--eval-every",
                                           "10",
                                           "--checkpoint-every",
                                           "10",
                                           "--log-every",
                                           "5",
                                           "--u-shaped"};
  std::vector<std::string> args = {"train", "--steps", "20", "--out",
                                   tmp + "/first"};
  args.insert(args.end(), common.begin(), common.end());
  std::ostringstream out, err;
  ASSERT_EQ(cli::Run(args, out, err), 0) << err.str();
  EXPECT_THAT(err.str(), ::testing::HasSubstr("step 20/20 loss"));
  EXPECT_THAT(err.str(), ::testing::HasSubstr("eval step 20: held-out loss"));
  EXPECT_THAT(err.str(), ::testing::HasSubstr("-> device head"));
  EXPECT_THAT(out.str(), ::testing::HasSubstr("trained cli to step 20"));

  // A second run of the same job continues from its checkpoint.
  args = {"train", "--steps", "30"};
  args.insert(args.end(), common.begin(), common.end());
  std::ostringstream out2, err2;
  ASSERT_EQ(cli::Run(args, out2, err2), 0) << err2.str();
  EXPECT_THAT(err2.str(), ::testing::HasSubstr("resumed at step 20"));
  EXPECT_THAT(out2.str(), ::testing::HasSubstr("to step 30"));

  // `adapter export` assembles step 30's adapter; it differs from step
  // 20's, and loads as PEFT.
  std::ostringstream out3, err3;
  ASSERT_EQ(
      cli::Run({"adapter", "export", "--controller", (*c)->controller_address(),
                "--model-id", "real", "--job", "cli", "--checkpoint-dir",
                tmp + "/ckpt", "--out", tmp + "/exported"},
               out3, err3),
      0)
      << err3.str();
  const double moved =
      AdapterDiff(tmp + "/first", tmp + "/exported", (*store)->config());
  EXPECT_GT(moved, 0);
  EXPECT_LT(moved, 1e8);

  // A job that never trained here has no spec to export.
  std::ostringstream out4, err4;
  EXPECT_EQ(
      cli::Run({"adapter", "export", "--controller", (*c)->controller_address(),
                "--model-id", "real", "--job", "nope", "--checkpoint-dir",
                tmp + "/ckpt", "--out", tmp + "/none"},
               out4, err4),
      1);
  EXPECT_THAT(err4.str(), ::testing::HasSubstr("no training spec"));
}

// Bad training input ends only its own session, with an error naming the
// field; the server keeps serving.
TEST(SplitTrainingBadInputTest, FailsTheSessionNamingTheField) {
  const std::string dir = testing::TinyModel(Arch::kGpt2);
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const ModelConfig& config = (*store)->config();
  const int64_t n = config.num_layers;
  ClusterPlan plan{"m", dir, false, {{"device", 0, 1}, {"a", 1, n}}};
  auto c = Cluster::Start(testing::TempDir("train_bad"), {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  StageStubCache stubs(64 << 20);
  const std::vector<v1::Hop> route = Route(**c, plan);
  int sessions = 0;
  // Opens a training session and sends `requests`; returns the first
  // error (or OK if all were answered).
  auto run = [&](const v1::TrainingSpec& spec,
                 std::vector<v1::StageRequest> requests) -> absl::Status {
    auto stream = StageStream::Start(stubs.Get(route[0].address()),
                                     absl::Now() + absl::Seconds(30), "a",
                                     route[0].address());
    v1::StageRequest open;
    open.mutable_open()->set_protocol_version(kProtocolVersion);
    open.mutable_open()->set_session_id(absl::StrCat("bad", sessions++));
    open.mutable_open()->set_model_id("m");
    open.mutable_open()->set_codec(v1::CODEC_FP32);
    *open.mutable_open()->add_route() = route[0];
    *open.mutable_open()->mutable_training() = spec;
    requests.insert(requests.begin(), open);
    absl::Status first;
    for (auto& r : requests) {
      std::promise<absl::Status> p;
      stream->Send(r, [&p](absl::StatusOr<v1::StageResponse> resp) {
        p.set_value(resp.status());
      });
      first = p.get_future().get();
      if (!first.ok()) break;
    }
    stream->Close();
    return first;
  };
  auto forward = [&](uint64_t id, std::vector<int64_t> labels) {
    v1::StageRequest r;
    r.mutable_forward()->set_step(id);
    r.mutable_forward()->set_train(true);
    r.mutable_forward()->set_loss_scale(1);
    EXPECT_TRUE(wire::Encode(at::randn({static_cast<int64_t>(labels.size()),
                                        config.hidden_size}),
                             v1::CODEC_FP32,
                             r.mutable_forward()->mutable_hidden())
                    .ok());
    for (int64_t l : labels) r.mutable_forward()->add_labels(l);
    return r;
  };
  v1::StageRequest backward;
  backward.mutable_backward()->set_step(0);

  v1::TrainingSpec bad = Spec(Arch::kGpt2, "bad", n);
  bad.set_rank(0);
  absl::Status s = run(bad, {});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("training.rank"));
  bad = Spec(Arch::kGpt2, "../etc", n);
  EXPECT_THAT(std::string(run(bad, {}).message()),
              ::testing::HasSubstr("training.job_id"));

  const v1::TrainingSpec spec = Spec(Arch::kGpt2, "ok", n);
  s = run(spec, {forward(0, {1, 2, config.vocab_size + 5})});
  EXPECT_THAT(std::string(s.message()),
              ::testing::HasSubstr("forward.labels[2]"));
  s = run(spec, {forward(0, {1, 2})});
  EXPECT_TRUE(s.ok()) << s;
  s = run(spec, {forward(0, {-100, -100})});
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("every label"));
  v1::StageRequest huge = forward(0, {1, 2});
  huge.mutable_forward()->set_loss_scale(1e300);
  EXPECT_THAT(std::string(run(spec, {huge}).message()),
              ::testing::HasSubstr("forward.loss_scale"));
  v1::StageRequest nan = forward(0, {1, 2});
  {
    at::Tensor h = at::zeros({2, config.hidden_size});
    h[1][3] = std::nan("");
    ASSERT_TRUE(
        wire::Encode(h, v1::CODEC_FP32, nan.mutable_forward()->mutable_hidden())
            .ok());
  }
  EXPECT_THAT(std::string(run(spec, {nan}).message()),
              ::testing::HasSubstr("non-finite"));
  s = run(spec, {backward});  // Micro-batch 0 of this session never ran.
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  v1::StageRequest step;
  step.mutable_optimizer_step()->set_upstream_sq_norm(-1);
  s = run(spec, {step});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()),
              ::testing::HasSubstr("optimizer_step.upstream_sq_norm"));
  v1::StageRequest restore;
  restore.mutable_restore()->set_step(3);  // No such checkpoint.
  s = run(spec, {restore});
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("step-00000003"));
  // Inference sessions cannot send training requests.
  {
    auto stream = StageStream::Start(stubs.Get(route[0].address()),
                                     absl::Now() + absl::Seconds(30), "a",
                                     route[0].address());
    v1::StageRequest open;
    open.mutable_open()->set_protocol_version(kProtocolVersion);
    open.mutable_open()->set_session_id("inference");
    open.mutable_open()->set_model_id("m");
    open.mutable_open()->set_codec(v1::CODEC_FP32);
    *open.mutable_open()->add_route() = route[0];
    std::promise<absl::Status> opened, refused, sneaky;
    // Nor read a training job's adapter while it changes.
    auto other = StageStream::Start(stubs.Get(route[0].address()),
                                    absl::Now() + absl::Seconds(30), "a",
                                    route[0].address());
    v1::StageRequest peek = open;
    peek.mutable_open()->set_session_id("peek");
    peek.mutable_open()->set_adapter("train:ok");
    other->Send(peek, [&](absl::StatusOr<v1::StageResponse> r) {
      sneaky.set_value(r.status());
    });
    EXPECT_THAT(std::string(sneaky.get_future().get().message()),
                ::testing::HasSubstr("training job's"));
    other->Close();
    stream->Send(open, [&](absl::StatusOr<v1::StageResponse> r) {
      opened.set_value(r.status());
    });
    ASSERT_TRUE(opened.get_future().get().ok());
    stream->Send(backward, [&](absl::StatusOr<v1::StageResponse> r) {
      refused.set_value(r.status());
    });
    EXPECT_THAT(std::string(refused.get_future().get().message()),
                ::testing::HasSubstr("training spec"));
    stream->Close();
  }
  // Still serving: a whole training step works.
  s = run(spec, {forward(1, {1, 2, 3}), backward});
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);  // Backward names 0.
  v1::StageRequest backward1 = backward;
  backward1.mutable_backward()->set_step(1);
  v1::StageRequest step0;
  step0.mutable_optimizer_step()->set_step(0);
  EXPECT_TRUE(run(spec, {forward(1, {1, 2, 3}), backward1, step0}).ok());
}

// Sequential split learning: two devices take turns on one job; each
// device's step is the job's next update, and the servers' shard learns
// from both.
TEST(SplitTrainingModesTest, DevicesTakingTurnsEachApplyAnUpdate) {
  const std::string dir = testing::TinyModel(Arch::kGpt2);
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const ModelConfig& config = (*store)->config();
  const int64_t n = config.num_layers;
  ClusterPlan plan{"m", dir, false, {{"device", 0, 1}, {"a", 1, n}}};
  auto c = Cluster::Start(testing::TempDir("train_sl"), {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  StageStubCache stubs(64 << 20);
  std::vector<std::unique_ptr<StageModel>> locals;
  std::vector<std::unique_ptr<SplitTrainer>> devices;
  for (int d = 0; d < 2; ++d) {
    locals.push_back(*StageModel::Load(**store, {{0, 1}, true, false}));
    SplitTrainerOptions so;
    so.session_id = absl::StrCat("turns", d);
    so.model_id = "m";
    so.spec = Spec(Arch::kGpt2, "turns", n);
    so.route = Route(**c, plan);
    auto t = SplitTrainer::Open(locals.back().get(), nullptr,
                                stubs.Get(so.route[0].address()), so);
    ASSERT_TRUE(t.ok()) << t.status();
    devices.push_back(*std::move(t));
  }
  for (int turn = 0; turn < 6; ++turn) {
    SplitTrainer& t = *devices[turn % 2];
    ASSERT_TRUE(
        t.ForwardBackward(RandomWindows(config.vocab_size, 2, turn)).ok());
    auto st = t.ApplyStep(false);
    ASSERT_TRUE(st.ok()) << st.status();
  }
  EXPECT_EQ(devices[0]->step(), 3u);
  EXPECT_EQ(devices[1]->step(), 3u);
  // A third session of the job sees all six updates on the server.
  locals.push_back(*StageModel::Load(**store, {{0, 1}, true, false}));
  SplitTrainerOptions so;
  so.session_id = "turns-check";
  so.model_id = "m";
  so.spec = Spec(Arch::kGpt2, "turns", n);
  so.route = Route(**c, plan);
  auto t = SplitTrainer::Open(locals.back().get(), nullptr,
                              stubs.Get(so.route[0].address()), so);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->server_step(), 6u);
}

// Exporting never rolls a job back: updates past the newest checkpoint
// make `ExportAdapter` refuse, naming why.
TEST(SplitTrainingExportTest, RefusesToRollBackUncheckpointedUpdates) {
  const std::string dir = testing::TinyModel(Arch::kGpt2);
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok());
  const int64_t n = (*store)->config().num_layers;
  const std::string tmp = testing::TempDir("train_export");
  ClusterPlan plan{"m", dir, false, {{"device", 0, 1}, {"a", 1, n}}};
  auto c = Cluster::Start(tmp, {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  auto agent = Agent(**c, "phone");
  TrainingOptions o;
  o.job_id = "half";
  o.checkpoint_dir = tmp + "/ckpt";
  auto t = agent->StartTraining("m", o);
  ASSERT_TRUE(t.ok()) << t.status();
  const auto w = ToWindows(RandomWindows((*store)->config().vocab_size, 2, 1));
  ASSERT_TRUE((*t)->Step(w, /*checkpoint=*/true).ok());
  ASSERT_TRUE((*t)->Step(w).ok());  // Update 2, not checkpointed.
  absl::Status s =
      agent->ExportAdapter("m", "half", o.checkpoint_dir, tmp + "/out");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("roll it back"));
  // The job was not touched: training goes on from update 2.
  auto st = (*t)->Step(w, /*checkpoint=*/true);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->step, 3);
  EXPECT_TRUE(
      agent->ExportAdapter("m", "half", o.checkpoint_dir, tmp + "/out").ok());
}

}  // namespace
}  // namespace edgesplit
