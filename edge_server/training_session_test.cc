// Server-side split training without a network: training sessions of two
// in-process hops (a [1,3) -> b [3,4) + head, the device's block 0 frozen)
// checked against the same training in one process, plus the step barrier,
// restore, export and bad input.
#include <ATen/ATen.h>

#include <cmath>
#include <tuple>

#include "edge_server/session_fakes.h"
#include "edge_server/training_job.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/protocol.h"
#include "proto/training_spec.h"
#include "runtime/model_store.h"
#include "runtime/train/stage_trainer.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

using testing::FakeTransport;
using ::testing::HasSubstr;

v1::TrainingSpec Spec(const std::string& job, uint32_t devices) {
  v1::TrainingSpec s;
  s.set_job_id(job);
  s.set_rank(4);
  s.set_alpha(8);
  for (const char* t : {"q_proj", "v_proj", "down_proj"}) {
    s.add_target_modules(t);
  }
  s.set_first_trained_block(1);  // The device's block 0 stays frozen.
  s.set_last_trained_block(4);
  s.set_seed(7);
  v1::OptimizerSpec* o = s.mutable_optimizer();
  o->set_lr(5e-3);
  o->set_beta1(0.9);
  o->set_beta2(0.999);
  o->set_eps(1e-8);
  o->set_total_steps(10);
  o->set_max_grad_norm(0.5);  // Small enough to clip: the chain's norm.
  s.set_devices(devices);
  return s;
}

class TrainingSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TinyModel(Arch::kLlama);
    store_ = *ModelStore::Open(dir_);
    ASSERT_TRUE(servers_.Load(dir_, testing::TempDir("jobs")).ok());
    device_ = *StageModel::Load(*store_, {{0, 1}, true, false});
  }

  v1::StageRequest Open(const v1::TrainingSpec& spec, const char* id) {
    v1::StageRequest r = testing::TwoHopOpenRequest(id);
    *r.mutable_open()->mutable_training() = spec;
    return r;
  }

  // A training forward of `window` (tokens; labels are the next tokens)
  // through the device's frozen block 0.
  v1::StageRequest Forward(uint64_t id, const at::Tensor& window,
                           double scale) {
    const int64_t n = window.size(0) - 1;
    auto cache = device_->NewCache(nullptr);
    StageInput in;
    in.sequences = {{cache.get(), n}};
    in.tokens = window.slice(0, 0, n);
    auto hidden = device_->Forward(in);
    EXPECT_TRUE(hidden.ok()) << hidden.status();
    v1::StageRequest r;
    v1::ForwardRequest* f = r.mutable_forward();
    f->set_step(id);
    f->set_train(true);
    f->set_loss_scale(scale);
    EXPECT_TRUE(
        wire::Encode(*hidden, v1::CODEC_FP32, f->mutable_hidden()).ok());
    for (int64_t i = 1; i <= n; ++i) f->add_labels(window[i].item<int64_t>());
    return r;
  }
  static v1::StageRequest Backward(uint64_t id) {
    v1::StageRequest r;
    r.mutable_backward()->set_step(id);
    return r;
  }
  static v1::StageRequest Step(uint64_t step) {
    v1::StageRequest r;
    r.mutable_optimizer_step()->set_step(step);
    return r;
  }
  std::vector<at::Tensor> Windows(int m, int seed) {
    at::manual_seed(seed);
    std::vector<at::Tensor> out;
    for (int i = 0; i < m; ++i) {
      out.push_back(
          at::randint(store_->config().vocab_size, {7 + 2 * i}, at::kLong));
    }
    return out;
  }

  std::string dir_;
  std::unique_ptr<ModelStore> store_;
  testing::TwoHopServers servers_;
  std::unique_ptr<StageModel> device_;
};

// Three optimizer steps of two micro-batches each, forwards and backwards
// pipelined without waiting: every loss and every step's global norm equal
// the whole model's in one process.
TEST_F(TrainingSessionTest, SplitStepsEqualSingleProcess) {
  const v1::TrainingSpec spec = Spec("equal", 1);
  const ModelConfig& c = store_->config();
  auto whole = *StageModel::Load(*store_, {{0, c.num_layers}, true, true});
  // Factors on the servers' blocks only (drawn per block, so the same as
  // theirs): the device's block 0 is frozen.
  std::shared_ptr<LoraAdapter> adapter = *LoraAdapter::Create(
      c, LoraConfigFor(spec, c), {1, c.num_layers}, spec.seed(), "ref");
  ASSERT_TRUE(whole->AttachAdapter(adapter).ok());
  auto ref = *StageTrainer::Create(whole.get(), adapter);
  const AdamWOptions adamw = AdamWFor(spec.optimizer());

  FakeTransport t;
  auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                            absl::InfiniteFuture());
  h->OnRequest(Open(spec, "s1"));
  auto opened = t.Await(0);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->opened().job_step(), 0u);
  size_t answer = 1;
  uint64_t id = 0;
  for (int step = 0; step < 3; ++step) {
    const auto windows = Windows(2, 10 + step);
    const double scale = 1.0 / windows.size();
    std::vector<double> want;
    for (const at::Tensor& w : windows) {
      const int64_t n = w.size(0) - 1;
      StageInput in;
      in.tokens = w.slice(0, 0, n);
      auto loss = ref->ForwardLoss(id, in, w.slice(0, 1, n + 1), scale);
      ASSERT_TRUE(loss.ok()) << loss.status();
      ASSERT_TRUE(ref->Backward(id, at::Tensor()).ok());
      want.push_back(*loss);
      h->OnRequest(Forward(id, w, scale));
      h->OnRequest(Backward(id));
      ++id;
    }
    for (double loss : want) {
      auto f = t.Await(answer++);
      ASSERT_TRUE(f.ok()) << f.status();
      ASSERT_TRUE(f->forward().has_loss());
      EXPECT_NEAR(f->forward().loss().loss(), loss, 1e-5);
      EXPECT_EQ(f->forward().timings_size(), 2);
      auto b = t.Await(answer++);
      ASSERT_TRUE(b.ok()) << b.status();
      ASSERT_TRUE(b->has_backward());
      // The gradient w.r.t. the device's hidden states comes back.
      auto g = wire::Decode(b->backward().grad_input(), c.hidden_size, "g");
      ASSERT_TRUE(g.ok()) << g.status();
    }
    // As a device does: the step once its backwards are answered (a hop
    // takes its norm when the step reaches it).
    h->OnRequest(Step(step));
    const double sq = ref->GradSquaredNorm();
    auto s = t.Await(answer++);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE(s->has_step());
    EXPECT_NEAR(s->step().total_sq_norm(), sq, 1e-6 * std::max(1.0, sq));
    const double norm = std::sqrt(sq);
    const double clip =
        norm > adamw.max_grad_norm ? adamw.max_grad_norm / norm : 1.0;
    EXPECT_NEAR(s->step().grad_scale(), clip, 1e-6);
    ref->Step(adamw, step, clip);
  }
  h->OnClientDone();
  EXPECT_TRUE(t.finished());
  EXPECT_TRUE(t.status().ok()) << t.status();
  h->OnDone();
}

// Export returns both hops' shards; a restore to update 0 brings back the
// initial factors on every hop.
TEST_F(TrainingSessionTest, ExportAndRestoreTravelTheChain) {
  FakeTransport t;
  auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                            absl::InfiniteFuture());
  h->OnRequest(Open(Spec("restore", 1), "s1"));
  ASSERT_TRUE(t.Await(0).ok());
  v1::StageRequest exp;
  exp.mutable_export_();
  h->OnRequest(exp);
  auto before = t.Await(1);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(before->has_shard());
  ASSERT_EQ(before->shard().hops_size(), 2);
  EXPECT_EQ(before->shard().hops(0), "a [1, 3)");
  EXPECT_EQ(before->shard().hops(1), "b [3, 4)");
  const auto w = Windows(1, 3)[0];
  h->OnRequest(Forward(0, w, 1.0));
  h->OnRequest(Backward(0));
  ASSERT_TRUE(t.Await(3).ok());
  h->OnRequest(Step(0));
  // As a device does: the export after the update's answer (requests are
  // answered in order, but a hop's export may run before its update).
  ASSERT_TRUE(t.Await(4).ok());
  h->OnRequest(exp);
  auto after = t.Await(5);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->shard().job_step(), 1u);
  EXPECT_NE(after->shard().SerializeAsString(),
            before->shard().SerializeAsString());
  v1::StageRequest restore;
  restore.mutable_restore()->set_step(0);
  h->OnRequest(restore);
  auto restored = t.Await(6);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->restored(), 0u);
  h->OnRequest(exp);
  auto again = t.Await(7);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->shard().SerializeAsString(),
            before->shard().SerializeAsString());
  h->OnDone();
}

// With devices = 2 the step waits until the job's second session arrives,
// then both get the same update.
TEST_F(TrainingSessionTest, StepWaitsAtTheBarrierForEveryDevice) {
  const v1::TrainingSpec spec = Spec("barrier", 2);
  FakeTransport t1, t2;
  auto h1 = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t1,
                                             absl::InfiniteFuture());
  auto h2 = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t2,
                                             absl::InfiniteFuture());
  h1->OnRequest(Open(spec, "d1"));
  h2->OnRequest(Open(spec, "d2"));
  ASSERT_TRUE(t1.Await(0).ok());
  ASSERT_TRUE(t2.Await(0).ok());
  const auto w = Windows(2, 5);
  h1->OnRequest(Forward(0, w[0], 0.5));
  h1->OnRequest(Backward(0));
  ASSERT_TRUE(t1.Await(2).ok());  // Its backward is answered...
  h1->OnRequest(Step(0));
  EXPECT_EQ(t1.Await(3, absl::Milliseconds(300)).status().code(),
            absl::StatusCode::kDeadlineExceeded);  // ...its step waits.
  h2->OnRequest(Forward(0, w[1], 0.5));
  h2->OnRequest(Backward(0));
  ASSERT_TRUE(t2.Await(2).ok());
  h2->OnRequest(Step(0));
  auto s1 = t1.Await(3);
  auto s2 = t2.Await(3);
  ASSERT_TRUE(s1.ok()) << s1.status();
  ASSERT_TRUE(s2.ok()) << s2.status();
  EXPECT_EQ(s1->step().SerializeAsString(), s2->step().SerializeAsString());
  EXPECT_GT(s1->step().total_sq_norm(), 0);
  h1->OnDone();
  h2->OnDone();
}

// sfl client selection narrows a round: an update with participants 2 of
// the job's 3 devices goes ahead once those two arrived, with the outcome
// of a job of two devices (their mean); a count above the job's devices,
// or unlike the update's first, ends that session naming the field.
TEST_F(TrainingSessionTest, StepOfFewerParticipantsGoesAheadWithoutTheRest) {
  const auto w = Windows(2, 5);
  auto two_step = [&](const v1::TrainingSpec& spec, uint32_t participants,
                      uint32_t second_participants) {
    FakeTransport t1, t2;
    auto h1 = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t1,
                                               absl::InfiniteFuture());
    auto h2 = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t2,
                                               absl::InfiniteFuture());
    h1->OnRequest(Open(spec, "d1"));
    h2->OnRequest(Open(spec, "d2"));
    EXPECT_TRUE(t1.Await(0).ok());
    EXPECT_TRUE(t2.Await(0).ok());
    for (auto [h, t, i] :
         {std::tuple{h1.get(), &t1, 0}, std::tuple{h2.get(), &t2, 1}}) {
      h->OnRequest(Forward(0, w[i], 0.5));
      h->OnRequest(Backward(0));
      EXPECT_TRUE(t->Await(2).ok());
    }
    v1::StageRequest step = Step(0);
    step.mutable_optimizer_step()->set_participants(participants);
    h1->OnRequest(step);
    step.mutable_optimizer_step()->set_participants(second_participants);
    h2->OnRequest(step);
    auto s2 = t2.Await(3, absl::Seconds(3));
    auto s1 = t1.Await(3, absl::Seconds(3));
    h1->OnDone();
    h2->OnDone();
    if (!s2.ok()) return absl::StatusOr<v1::StageResponse>(t2.status());
    if (!s1.ok()) return absl::StatusOr<v1::StageResponse>(t1.status());
    return s1;
  };
  auto narrowed = two_step(Spec("three", 3), 2, 2);
  auto pair = two_step(Spec("two", 2), 0, 0);
  ASSERT_TRUE(narrowed.ok()) << narrowed.status();
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_EQ(narrowed->step().SerializeAsString(),
            pair->step().SerializeAsString());
  auto mixed = two_step(Spec("mixed", 3), 2, 3);
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mixed.status().message(),
              HasSubstr("optimizer_step.participants: 3"));
  auto over = two_step(Spec("over", 3), 4, 4);
  EXPECT_THAT(over.status().message(), HasSubstr("has 3 devices"));
}

// Bad training input ends only its session, naming the field; the job
// still trains for the next session.
TEST_F(TrainingSessionTest, BadInputEndsOnlyItsSession) {
  const v1::TrainingSpec spec = Spec("bad", 1);
  auto status_of = [&](std::function<void(SessionHandler&)> send) {
    FakeTransport t;
    auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                              absl::InfiniteFuture());
    h->OnRequest(Open(spec, "bad"));
    EXPECT_TRUE(t.Await(0).ok());
    send(*h);
    (void)t.Await(1);
    h->OnDone();
    return t.status();
  };
  const auto w = Windows(1, 9)[0];
  absl::Status s = status_of([&](SessionHandler& h) {
    v1::StageRequest r = Forward(0, w, 1.0);
    r.mutable_forward()->set_labels(2, 1 << 20);
    h.OnRequest(r);
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("forward.labels[2]"));
  s = status_of([&](SessionHandler& h) { h.OnRequest(Backward(42)); });
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  s = status_of([&](SessionHandler& h) {
    v1::StageRequest r = Step(0);
    r.mutable_optimizer_step()->set_upstream_sq_norm(-1);
    h.OnRequest(r);
  });
  EXPECT_THAT(s.message(), HasSubstr("optimizer_step.upstream_sq_norm"));
  s = status_of([&](SessionHandler& h) {
    v1::StageRequest r = Forward(0, w, 1.0);
    r.mutable_forward()->set_loss_scale(NAN);
    h.OnRequest(r);
  });
  EXPECT_THAT(s.message(), HasSubstr("forward.loss_scale"));

  // Training requests on an inference session.
  FakeTransport t;
  auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                            absl::InfiniteFuture());
  v1::StageRequest open = Open(spec, "inference");
  open.mutable_open()->clear_training();
  h->OnRequest(open);
  ASSERT_TRUE(t.Await(0).ok());
  h->OnRequest(Backward(0));
  (void)t.Await(1);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  h->OnDone();

  // The job still completes a whole step.
  FakeTransport ok;
  auto good = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &ok,
                                               absl::InfiniteFuture());
  good->OnRequest(Open(spec, "good"));
  ASSERT_TRUE(ok.Await(0).ok());
  good->OnRequest(Forward(0, w, 1.0));
  good->OnRequest(Backward(0));
  ASSERT_TRUE(ok.Await(2).ok());
  good->OnRequest(Step(0));
  auto step = ok.Await(3);
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_TRUE(step->has_step());
  good->OnDone();
}

// Activations kept for backwards are capped per server: a forward beyond
// max_kept_training_tokens ends its session RESOURCE_EXHAUSTED naming the
// limit; backwards and the session's end give the tokens back.
TEST_F(TrainingSessionTest, KeptActivationsAreCappedPerServer) {
  std::map<std::string, std::shared_ptr<UsageBudget>> kept;
  for (auto& [name, env] : servers_.factory.envs) {
    kept[name] = UsageBudget::Create("max_kept_training_tokens", "tokens", 20);
    env.kept_training_tokens = kept[name];
  }
  FakeTransport t;
  auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                            absl::InfiniteFuture());
  h->OnRequest(Open(Spec("kept", 1), "kept"));
  ASSERT_TRUE(t.Await(0).ok());
  const auto w = Windows(3, 4);  // 6, 8 and 10 tokens.
  h->OnRequest(Forward(0, w[0], 0.5));
  h->OnRequest(Forward(1, w[1], 0.5));
  ASSERT_TRUE(t.Await(2).ok());
  EXPECT_EQ(kept["a"]->used(), 14);
  EXPECT_EQ(kept["b"]->used(), 14);
  h->OnRequest(Backward(0));
  ASSERT_TRUE(t.Await(3).ok());
  EXPECT_EQ(kept["a"]->used(), 8);
  EXPECT_EQ(kept["b"]->used(), 8);
  h->OnRequest(Forward(2, w[2], 0.5));  // 18 of 20.
  ASSERT_TRUE(t.Await(4).ok());
  h->OnRequest(Forward(3, w[0], 0.5));  // 24: refused.
  auto refused = t.Await(5);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted)
      << refused.status();
  EXPECT_THAT(refused.status().message(),
              HasSubstr("max_kept_training_tokens (20"));
  h->OnDone();
  for (absl::Time until = absl::Now() + absl::Seconds(10);
       (kept["a"]->used() > 0 || kept["b"]->used() > 0) &&
       absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(kept["a"]->used(), 0);
  EXPECT_EQ(kept["b"]->used(), 0);
}

}  // namespace
}  // namespace edgesplit
