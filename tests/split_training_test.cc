// Split fine-tuning end to end on loopback: controller + edge servers (real
// gRPC) + the device's trainer. Split must equal whole: the loss and every
// LoRA gradient of a 3-stage (or U-shaped) split step equal a single-process
// step, for both architectures, and after 50 pipelined steps the adapter
// assembled from every hop equals the single-process one. Also: modes, bad
// input, exports that would roll a job back.
#include <atomic>
#include <cmath>
#include <fstream>
#include <future>
#include <optional>
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
#include "runtime/train/training_data.h"
#include "testing/cluster.h"
#include "testing/test_models.h"
#include "tests/training_util.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::AdapterDiff;
using ::edgesplit::testing::Agent;
using ::edgesplit::testing::Cluster;
using ::edgesplit::testing::ClusterPlan;
using ::edgesplit::testing::RandomWindows;
using ::edgesplit::testing::Reference;
using ::edgesplit::testing::Route;
using ::edgesplit::testing::Spec;
using ::edgesplit::testing::ToWindows;

// 50 split steps against the single-process steps: losses and the global
// norm every step, every gradient at the first and last step, the adapter
// at the end. Blocks before `first_trained` stay frozen. `weights` set:
// QLoRA, every stage (servers, device, reference) over the same quantized
// base.
void ExpectSplitEqualsWhole(
    Arch arch, bool u_shaped, int64_t first_trained, bool recompute,
    std::optional<kernels::WeightType> weights = std::nullopt) {
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
  testing::ClusterOptions co;
  co.weights = weights;
  auto c = Cluster::Start(testing::TempDir("train_equal"), {plan}, co);
  ASSERT_TRUE(c.ok()) << c.status();

  v1::TrainingSpec spec = Spec(arch, "equal", n);
  spec.set_first_trained_block(first_trained);
  spec.set_recompute(recompute);
  StageOptions stage_options;
  stage_options.weights = weights;
  auto ref = Reference::Make(dir, spec, stage_options);
  auto local = StageModel::Load(**store, {{0, 1}, true, false}, stage_options);
  ASSERT_TRUE(local.ok());
  std::unique_ptr<StageModel> head;
  if (u_shaped) {
    head = *StageModel::Load(**store, {{n, n}, false, true}, stage_options);
  }
  SplitTrainerOptions so;
  so.session_id = "equal";
  so.model_id = "m";
  so.spec = spec;
  so.route = Route(**c, plan);
  so.grant = (*c)->Grant(so.session_id, so.model_id, so.route, so.codec,
                         head != nullptr, so.spec.job_id());
  StageStubCache stubs(64 << 20, (*c)->DeviceSecurity("device"));
  auto split = SplitTrainer::Open(
      local->get(), head.get(),
      *stubs.Get(so.route[0].address(), so.route[0].node()), so);
  ASSERT_TRUE(split.ok()) << split.status();
  // A device whose blocks are frozen runs forward only.
  EXPECT_EQ((*split)->device_trains(), first_trained == 0);

  // QLoRA runs 3 steps: past the first updates, last-bit differences that
  // moved an activation across a Q8_0 rounding boundary (see tol) compound
  // (1e-4 relative by step 16), as any two float orders of a quantized
  // model would.
  const int steps = weights ? 3 : 50;
  for (int step = 0; step < steps; ++step) {
    // Four micro-batches of different lengths, pipelined through the hops.
    const auto windows = RandomWindows(config.vocab_size, 4, step);
    const double want = ref->ForwardBackward(windows);
    auto got = (*split)->ForwardBackward(windows);
    ASSERT_TRUE(got.ok()) << got.status();
    // Float: 1e-5 absolute. QLoRA: 1e-5 relative, since a last-bit
    // difference between the stages' float sums can move an activation
    // across a Q8_0 rounding boundary (the activations of quantized
    // products are rounded to 8 bits), which shifts the result by one code.
    auto tol = [&](double scale) {
      return weights ? 1e-5 * std::max(1.0, std::fabs(scale)) : 1e-5;
    };
    ASSERT_NEAR(got->loss, want, tol(want)) << "step " << step;
    if (step == 0 || step == steps - 1) {
      // Every LoRA gradient, gathered from every hop.
      AdapterTensors factors, grads;
      ASSERT_TRUE((*split)->Export(&factors, &grads).ok());
      const auto ref_grads = ref->trainer->Gradients();
      ASSERT_EQ(grads.size(), ref_grads.size());
      for (const auto& [name, g] : ref_grads) {
        const auto it = grads.find(PeftTensorName(name));
        ASSERT_NE(it, grads.end()) << name;
        EXPECT_LE((it->second - g).abs().max().item<double>(),
                  tol(g.abs().max().item<double>()))
            << name << " at step " << step;
      }
    }
    // The global norm summed along the chain is the whole model's.
    const double ref_norm = std::sqrt(ref->trainer->GradSquaredNorm());
    ref->Apply();
    auto applied = (*split)->ApplyStep(false);
    ASSERT_TRUE(applied.ok()) << applied.status();
    EXPECT_NEAR(applied->grad_norm, ref_norm,
                weights ? tol(ref_norm) : 1e-5 * (1 + ref_norm));
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
      EXPECT_LE((it->second - *t).abs().max().item<double>(),
                weights ? 1e-4 : 1e-5)
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

// QLoRA: fp32 LoRA factors trained over a frozen quantized base on every
// stage (the servers' `weights:` setting), backpropagating through the
// blocks dequantized on the fly; split still equals whole step for step.
TEST(SplitQloraTest, StepsOverQuantizedBasesEqualSingleProcessSteps) {
  ExpectSplitEqualsWhole(Arch::kLlama, false, 0, true,
                         kernels::WeightType::kQ4_0);
  ExpectSplitEqualsWhole(Arch::kGpt2, true, 0, false,
                         kernels::WeightType::kQ8_0);
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
  StageStubCache stubs(64 << 20, (*c)->DeviceSecurity("device"));
  const std::vector<v1::Hop> route = Route(**c, plan);
  int sessions = 0;
  // Opens a training session and sends `requests`; returns the first
  // error (or OK if all were answered).
  auto run = [&](const v1::TrainingSpec& spec,
                 std::vector<v1::StageRequest> requests) -> absl::Status {
    auto stream = StageStream::Start(
        *stubs.Get(route[0].address(), route[0].node()),
        absl::Now() + absl::Seconds(30), "a", route[0].address());
    v1::StageRequest open;
    open.mutable_open()->set_protocol_version(kProtocolVersion);
    open.mutable_open()->set_session_id(absl::StrCat("bad", sessions++));
    open.mutable_open()->set_model_id("m");
    open.mutable_open()->set_codec(v1::CODEC_FP32);
    *open.mutable_open()->add_route() = route[0];
    *open.mutable_open()->mutable_training() = spec;
    *open.mutable_open()->mutable_grant() = (*c)->Grant(open.open());
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
    auto stream = StageStream::Start(
        *stubs.Get(route[0].address(), route[0].node()),
        absl::Now() + absl::Seconds(30), "a", route[0].address());
    v1::StageRequest open;
    open.mutable_open()->set_protocol_version(kProtocolVersion);
    open.mutable_open()->set_session_id("inference");
    open.mutable_open()->set_model_id("m");
    open.mutable_open()->set_codec(v1::CODEC_FP32);
    *open.mutable_open()->add_route() = route[0];
    *open.mutable_open()->mutable_grant() = (*c)->Grant(open.open());
    std::promise<absl::Status> opened, refused, sneaky;
    // Nor read a training job's adapter while it changes.
    auto other = StageStream::Start(
        *stubs.Get(route[0].address(), route[0].node()),
        absl::Now() + absl::Seconds(30), "a", route[0].address());
    v1::StageRequest peek = open;
    peek.mutable_open()->set_session_id("peek");
    peek.mutable_open()->set_adapter("train:ok");
    *peek.mutable_open()->mutable_grant() = (*c)->Grant(peek.open());
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
  StageStubCache stubs(64 << 20, (*c)->DeviceSecurity("device"));
  std::vector<std::unique_ptr<StageModel>> locals;
  std::vector<std::unique_ptr<SplitTrainer>> devices;
  for (int d = 0; d < 2; ++d) {
    locals.push_back(*StageModel::Load(**store, {{0, 1}, true, false}));
    SplitTrainerOptions so;
    so.session_id = absl::StrCat("turns", d);
    so.model_id = "m";
    so.spec = Spec(Arch::kGpt2, "turns", n);
    so.route = Route(**c, plan);
    so.grant = (*c)->Grant(so.session_id, so.model_id, so.route, so.codec,
                           false, so.spec.job_id());
    auto t = SplitTrainer::Open(
        locals.back().get(), nullptr,
        *stubs.Get(so.route[0].address(), so.route[0].node()), so);
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
  so.grant = (*c)->Grant(so.session_id, so.model_id, so.route, so.codec, false,
                         so.spec.job_id());
  auto t = SplitTrainer::Open(
      locals.back().get(), nullptr,
      *stubs.Get(so.route[0].address(), so.route[0].node()), so);
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
  ClusterPlan zero{"z", dir, false, {{"device", 0, 0}, {"a", 0, n}}};
  auto c = Cluster::Start(tmp, {plan, zero});
  ASSERT_TRUE(c.ok()) << c.status();
  auto agent = Agent(**c, "phone");
  TrainingOptions o;
  // A plan giving the device zero blocks cannot train (the text would go
  // up as token ids): refused before anything is sent.
  o.job_id = "zero";
  {
    auto z = agent->StartTraining("z", o);
    const auto w =
        ToWindows(RandomWindows((*store)->config().vocab_size, 2, 1));
    absl::Status zs = z.ok() ? (*z)->Step(w).status() : z.status();
    EXPECT_EQ(zs.code(), absl::StatusCode::kFailedPrecondition) << zs;
    EXPECT_THAT(std::string(zs.message()),
                ::testing::HasSubstr("gives the device zero blocks"));
  }
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
