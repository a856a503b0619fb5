// SessionHandler without a network: handlers of several "servers" chained
// in-process through a fake NextHop, checked against the monolithic model,
// plus malformed requests.
#include "edge_server/session_handler.h"

#include <ATen/ATen.h>

#include "absl/synchronization/notification.h"
#include "edge_server/session_fakes.h"
#include "edge_server/stage_service.h"
#include "edge_server/training_job.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/draft_check.h"
#include "runtime/generator.h"
#include "testing/test_models.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using testing::FakeTransport;
using ::testing::HasSubstr;
using testing::TwoHopOpenRequest;
using testing::TwoHopServers;

class SessionHandlerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TinyModel(Arch::kLlama);
    auto store = ModelStore::Open(dir_);
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    // Device [0,1) here; server a [1,3); server b [3,4) + head.
    ASSERT_TRUE(servers_.Load(dir_).ok());
    auto device = StageModel::Load(*store_, {{0, 1}, true, false});
    ASSERT_TRUE(device.ok());
    device_ = std::move(*device);
  }

  v1::StageRequest OpenRequest() { return TwoHopOpenRequest("s1"); }

  std::string dir_;
  std::unique_ptr<ModelStore> store_;
  TwoHopServers servers_;
  std::unique_ptr<StageModel> device_;
};

TEST_F(SessionHandlerTest, ChainEqualsMonolithic) {
  FakeTransport t;
  auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                            absl::InfiniteFuture());
  h->OnRequest(OpenRequest());
  auto opened = t.Await(0);
  ASSERT_TRUE(opened.ok()) << opened.status();
  ASSERT_TRUE(opened->has_opened());

  auto whole = LocalPipeline::Load(*store_, {});
  ASSERT_TRUE(whole.ok());
  auto ref = (*whole)->NewSequence();
  auto device_cache = device_->NewCache(nullptr);
  std::vector<int32_t> tokens = {5, 9, 13, 2, 7};
  for (int step = 0; step < 6; ++step) {
    StageInput in;
    in.sequences = {{device_cache.get(), static_cast<int64_t>(tokens.size())}};
    in.tokens = at::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()),
                           at::kLong);
    auto hidden = device_->Forward(in);
    ASSERT_TRUE(hidden.ok());
    v1::StageRequest req;
    req.mutable_forward()->set_step(step);
    req.mutable_forward()->set_last_token_only(true);
    ASSERT_TRUE(wire::Encode(*hidden, v1::CODEC_FP32,
                             req.mutable_forward()->mutable_hidden())
                    .ok());
    h->OnRequest(req);
    auto r = t.Await(step + 1);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->has_forward());
    EXPECT_EQ(r->forward().timings_size(), 2);
    EXPECT_EQ(r->forward().timings(0).node(), "a");
    auto logits = wire::Decode(r->forward().output(), 0, "logits");
    ASSERT_TRUE(logits.ok());
    auto want = ref->Forward(tokens);
    ASSERT_TRUE(want.ok());
    at::Tensor w = at::tensor(*want);
    EXPECT_LE(((*logits)[0] - w).abs().max().item<double>(), 1e-5);
    tokens = {static_cast<int32_t>(w.argmax().item<int64_t>())};
  }
  h->OnDone();
}

// Speculative verification's rollback: after 5 rows, a step that rolls
// back 2 positions and adds 2 rows gives every row the logits of the
// sequence with the rejected rows never fed, on both hops (the middle hop
// passes the rollback on). A rollback past what the session holds is
// refused naming it.
TEST_F(SessionHandlerTest, RollbackForgetsRejectedRowsOnEveryHop) {
  FakeTransport t;
  auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                            absl::InfiniteFuture());
  h->OnRequest(OpenRequest());
  ASSERT_TRUE(t.Await(0).ok());
  auto device_cache = device_->NewCache(nullptr);
  auto send = [&](uint64_t step, const std::vector<int32_t>& tokens,
                  uint32_t rollback) -> absl::StatusOr<at::Tensor> {
    device_cache->Truncate(device_cache->length() - rollback);
    StageInput in;
    in.sequences = {{device_cache.get(), static_cast<int64_t>(tokens.size())}};
    in.tokens = at::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()),
                           at::kLong);
    auto hidden = device_->Forward(in);
    if (!hidden.ok()) return hidden.status();
    v1::StageRequest req;
    req.mutable_forward()->set_step(step);
    req.mutable_forward()->set_rollback(rollback);
    EXPECT_TRUE(wire::Encode(*hidden, v1::CODEC_FP32,
                             req.mutable_forward()->mutable_hidden())
                    .ok());
    h->OnRequest(req);
    auto r = t.Await(step + 1);
    if (!r.ok()) return r.status();
    return wire::Decode(r->forward().output(), 0, "logits");
  };
  ASSERT_TRUE(send(0, {5, 9, 13, 2, 7}, 0).ok());
  auto got = send(1, {4, 11}, 2);  // Keeps 5 9 13, then 4 11.
  ASSERT_TRUE(got.ok()) << got.status();
  auto whole = LocalPipeline::Load(*store_, {});
  ASSERT_TRUE(whole.ok());
  auto want = (*whole)->NewSequence()->ForwardAll({5, 9, 13, 4, 11});
  ASSERT_TRUE(want.ok());
  EXPECT_LE(((*got) - want->slice(0, 3, 5)).abs().max().item<double>(), 1e-5);
  auto refused = send(2, {1}, 6);  // The session holds 5.
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("rollback of 6 positions, but the session holds 5"));
  h->OnDone();
}

// Greedy answers: ids of each row's top logit, not the logits (passed on
// by the middle hop); equal to the argmax of the logits a plain request
// gets.
TEST_F(SessionHandlerTest, ArgmaxOnlyAnswersTokenIds) {
  auto device_cache = device_->NewCache(nullptr);
  StageInput in;
  in.sequences = {{device_cache.get(), 4}};
  in.tokens = at::tensor(std::vector<int64_t>{5, 9, 13, 2}, at::kLong);
  auto hidden = device_->Forward(in);
  ASSERT_TRUE(hidden.ok());
  std::vector<v1::StageResponse> answers;
  for (bool argmax_only : {false, true}) {
    FakeTransport t;
    auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                              absl::InfiniteFuture());
    h->OnRequest(OpenRequest());
    ASSERT_TRUE(t.Await(0).ok());
    v1::StageRequest req;
    req.mutable_forward()->set_argmax_only(argmax_only);
    ASSERT_TRUE(wire::Encode(*hidden, v1::CODEC_FP32,
                             req.mutable_forward()->mutable_hidden())
                    .ok());
    h->OnRequest(req);
    auto r = t.Await(1);
    ASSERT_TRUE(r.ok()) << r.status();
    answers.push_back(*r);
    h->OnDone();
  }
  auto logits = wire::Decode(answers[0].forward().output(), 0, "logits");
  ASSERT_TRUE(logits.ok());
  const v1::ForwardResult& ids = answers[1].forward();
  EXPECT_FALSE(ids.has_output());
  ASSERT_EQ(ids.tokens_size(), 4);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(ids.tokens(r), (*logits)[r].argmax().item<int64_t>());
  }
  EXPECT_LT(answers[1].ByteSizeLong() * 20, answers[0].ByteSizeLong());
}

// Sampled speculative verification checked on the head hop (through the
// middle hop): it answers how many drafts it keeps and that row's logits
// only, as AcceptDraft on the monolithic model's logits decides. Checks a
// hop cannot run, or that do not fit the step, are refused.
TEST_F(SessionHandlerTest, DraftCheckAnswersAcceptedAndOneRow) {
  const std::vector<int32_t> rows = {5, 9, 13, 2, 7};
  auto whole = LocalPipeline::Load(*store_, {});
  ASSERT_TRUE(whole.ok());
  auto all = (*whole)->NewSequence()->ForwardAll(rows);
  ASSERT_TRUE(all.ok());
  const at::Tensor want = all->contiguous();
  auto device_cache = device_->NewCache(nullptr);
  StageInput in;
  in.sequences = {{device_cache.get(), 5}};
  in.tokens =
      at::tensor(std::vector<int64_t>(rows.begin(), rows.end()), at::kLong);
  auto hidden = device_->Forward(in);
  ASSERT_TRUE(hidden.ok());
  auto send = [&](v1::StageRequest open, v1::ForwardRequest f) {
    FakeTransport t;
    auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                              absl::InfiniteFuture());
    h->OnRequest(open);
    EXPECT_TRUE(t.Await(0).ok());
    EXPECT_TRUE(wire::Encode(*hidden, v1::CODEC_FP32, f.mutable_hidden()).ok());
    v1::StageRequest req;
    *req.mutable_forward() = f;
    h->OnRequest(req);
    auto r = t.Await(1);
    h->OnDone();
    return r;
  };
  DraftCheck check;
  check.params.temperature = 0.8f;
  check.params.top_k = 20;
  check.draft_probs = {0.9f, 0.05f, 0.3f, 0.5f};
  for (const std::vector<double>& uniforms :
       {std::vector<double>{0.1, 0.2, 0.3, 0.4},
        std::vector<double>{0.0, 0.0, 0.0, 0.0},
        std::vector<double>{0.99, 0.99, 0.99, 0.99}}) {
    check.uniforms = uniforms;
    v1::ForwardRequest f;
    v1::DraftCheck* dc = f.mutable_draft_check();
    dc->set_temperature(0.8f);
    dc->set_top_k(20);
    dc->set_top_p(1.0f);
    dc->mutable_draft_probs()->Add(check.draft_probs.begin(),
                                   check.draft_probs.end());
    dc->mutable_uniforms()->Add(uniforms.begin(), uniforms.end());
    dc->mutable_draft_tokens()->Add(rows.begin() + 1, rows.end());
    auto r = send(OpenRequest(), f);
    ASSERT_TRUE(r.ok()) << r.status();
    const int64_t kept = AcceptDraft(want.data_ptr<float>(), want.size(1),
                                     absl::MakeSpan(rows).subspan(1), check);
    EXPECT_EQ(r->forward().accepted(), kept);
    auto row = wire::Decode(r->forward().output(), 0, "row");
    ASSERT_TRUE(row.ok()) << row.status();
    ASSERT_EQ(row->size(0), 1);
    EXPECT_LE((*row - want.narrow(0, kept, 1)).abs().max().item<double>(),
              1e-5);
  }
  // Refused: with argmax_only; a draft token count that is not the rows
  // after the first; a uniform out of range; a route ending with hidden
  // states (U-shaped: the device checks).
  v1::ForwardRequest good;
  v1::DraftCheck* dc = good.mutable_draft_check();
  dc->set_temperature(0.8f);
  dc->set_top_p(1.0f);
  for (int i = 1; i < 5; ++i) {
    dc->add_draft_probs(0.5f);
    dc->add_uniforms(0.5);
    dc->add_draft_tokens(rows[i]);
  }
  v1::ForwardRequest f = good;
  f.set_argmax_only(true);
  EXPECT_THAT(std::string(send(OpenRequest(), f).status().message()),
              HasSubstr("not with argmax_only or last_token_only"));
  f = good;
  f.mutable_draft_check()->add_draft_tokens(3);
  EXPECT_THAT(std::string(send(OpenRequest(), f).status().message()),
              HasSubstr("5 draft_tokens, 4 draft_probs and 4 uniforms for a "
                        "step of 5 rows"));
  f = good;
  f.mutable_draft_check()->set_uniforms(2, -0.5);
  EXPECT_THAT(std::string(send(OpenRequest(), f).status().message()),
              HasSubstr("uniforms[2] = -0.5 is not in [0, 1)"));
  v1::StageRequest u_open = OpenRequest();
  u_open.mutable_open()->mutable_route()->RemoveLast();
  u_open.mutable_open()->set_return_hidden(true);
  EXPECT_THAT(std::string(send(u_open, good).status().message()),
              HasSubstr("draft_check: this route ends with hidden states"));
  v1::ForwardRequest ids;
  ids.set_argmax_only(true);
  EXPECT_THAT(std::string(send(u_open, ids).status().message()),
              HasSubstr("argmax_only: this route ends with hidden states"));
}

class BadRequestTest : public SessionHandlerTest {
 protected:
  // Opens a session on "b" alone and sends `forward`; returns the status.
  absl::Status SendBad(const v1::Tensor& hidden, uint64_t step = 0) {
    FakeTransport t;
    auto h = std::make_shared<SessionHandler>(servers_.factory.envs["b"], &t,
                                              absl::InfiniteFuture());
    v1::StageRequest open = OpenRequest();
    open.mutable_open()->mutable_route()->DeleteSubrange(0, 1);
    h->OnRequest(open);
    EXPECT_TRUE(t.Await(0).ok());
    v1::StageRequest req;
    req.mutable_forward()->set_step(step);
    *req.mutable_forward()->mutable_hidden() = hidden;
    h->OnRequest(req);
    (void)t.Await(1);
    h->OnDone();
    return t.status();
  }
  v1::Tensor Good() {
    v1::Tensor t;
    EXPECT_TRUE(wire::Encode(at::ones({2, store_->config().hidden_size}),
                             v1::CODEC_FP32, &t)
                    .ok());
    return t;
  }
};

TEST_F(BadRequestTest, MalformedTensorsAreInvalidArgument) {
  v1::Tensor t = Good();
  t.mutable_data()->resize(7);
  absl::Status s = SendBad(t);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("forward.hidden: data has 7 bytes"));
  t = Good();
  t.set_shape(0, int64_t{1} << 50);
  EXPECT_THAT(SendBad(t).message(), HasSubstr("row count"));
  t = Good();
  t.set_codec(static_cast<v1::Codec>(42));
  EXPECT_THAT(SendBad(t).message(), HasSubstr("unknown codec 42"));
  v1::Tensor wide;
  ASSERT_TRUE(wire::Encode(at::ones({2, 65}), v1::CODEC_FP32, &wide).ok());
  EXPECT_THAT(SendBad(wide).message(),
              HasSubstr("width 65 but this stage expects 64"));
  EXPECT_THAT(SendBad(Good(), /*step=*/3).message(), HasSubstr("out of order"));
}

TEST_F(BadRequestTest, BadOpensAreRejected) {
  auto open_status = [&](std::function<void(v1::OpenSession*)> edit) {
    FakeTransport t;
    auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                              absl::InfiniteFuture());
    v1::StageRequest r = OpenRequest();
    edit(r.mutable_open());
    h->OnRequest(r);
    (void)t.Await(0);
    h->OnDone();
    return t.status();
  };
  EXPECT_THAT(open_status([](auto* o) { o->set_model_id("nope"); }).message(),
              HasSubstr("does not serve model nope"));
  EXPECT_THAT(open_status([](auto* o) {
                o->mutable_route(0)->set_node("z");
              }).message(),
              HasSubstr("route[0] names node \"z\""));
  EXPECT_EQ(open_status([](auto* o) { o->set_protocol_version(9); }).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(open_status([](auto* o) {
              o->mutable_route(1)->set_node("ghost");
            }).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_THAT(
      open_status([](auto* o) { o->mutable_route()->RemoveLast(); }).message(),
      HasSubstr("holds no LM head"));
}

}  // namespace
}  // namespace edgesplit

namespace edgesplit {
namespace {

TEST_F(SessionHandlerTest, IdleSessionsExpire) {
  StageServiceImpl service(servers_.factory.envs["b"]);
  FakeTransport t;
  auto h = std::make_shared<SessionHandler>(servers_.factory.envs["b"], &t,
                                            absl::InfiniteFuture());
  v1::StageRequest open = OpenRequest();
  open.mutable_open()->mutable_route()->DeleteSubrange(0, 1);
  h->OnRequest(open);
  ASSERT_TRUE(t.Await(0).ok());
  ASSERT_TRUE(service.Add(h, Peer{}).ok());
  EXPECT_EQ(service.ExpireIdle(absl::Seconds(60)), 0);
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_EQ(service.ExpireIdle(absl::Milliseconds(10)), 1);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(t.status().message(), HasSubstr("idle"));
  h->OnDone();
  service.Remove(h.get());
  EXPECT_EQ(service.open_sessions(), 0);
}

// Decoded inputs waiting for compute are capped per server: an input that
// would exceed max_pending_input_bytes ends its session RESOURCE_EXHAUSTED
// naming the limit; smaller ones still run, and every byte comes back.
TEST_F(BadRequestTest, PendingInputsAreCappedPerServer) {
  auto budget = UsageBudget::Create("max_pending_input_bytes", "bytes", 1024);
  servers_.factory.envs["b"].pending_inputs = budget;
  const int64_t H = store_->config().hidden_size;  // 64 floats: 256 bytes.
  auto send = [&](int64_t rows) {
    v1::Tensor t;
    EXPECT_TRUE(wire::Encode(at::ones({rows, H}), v1::CODEC_FP32, &t).ok());
    return SendBad(t);
  };
  absl::Status big = send(5);  // 1280 bytes.
  EXPECT_EQ(big.code(), absl::StatusCode::kResourceExhausted) << big;
  EXPECT_THAT(big.message(), HasSubstr("max_pending_input_bytes (1024"));
  // A 4-row input fits: its session answers (and then ends as the client
  // vanishes, which SendBad reports as CANCELLED or OK).
  absl::Status fits = send(4);
  EXPECT_NE(fits.code(), absl::StatusCode::kResourceExhausted) << fits;
  // Given back once the step is done with (just after its answer).
  for (absl::Time until = absl::Now() + absl::Seconds(10);
       budget->used() > 0 && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_EQ(budget->used(), 0);
}

}  // namespace
}  // namespace edgesplit

namespace edgesplit {
namespace {

// A plan that gives the device zero blocks: the one server holds [0, 4),
// the embedding and the head, and takes token ids. Its logits equal the
// monolithic model's; hidden states, ids out of the vocabulary, ids sent
// to a hop that does not embed and training sessions are refused, each
// naming why.
class ZeroDeviceBlocksTest : public SessionHandlerTest {
 protected:
  void SetUp() override {
    SessionHandlerTest::SetUp();
    StageHostOptions o;
    o.node = "whole";
    host_ = std::make_unique<StageHost>(o);
    ASSERT_TRUE(host_->Load("tiny", dir_, StageSpec{{0, 4}, true, true}).ok());
    jobs_ = std::make_unique<TrainingJobs>(testing::TempDir("zero_jobs"));
    env_.host = host_.get();
    env_.next_hops = &servers_.factory;
    env_.jobs = jobs_.get();
  }
  v1::StageRequest Open(bool training = false) {
    v1::StageRequest r = OpenRequest();
    auto* o = r.mutable_open();
    o->clear_route();
    auto* hop = o->add_route();
    hop->set_node("whole");
    hop->set_first_block(0);
    hop->set_last_block(4);
    if (training) o->mutable_training()->set_job_id("j");
    return r;
  }
  // Opens a session, sends `forward` as step 0; the answer or the error.
  absl::StatusOr<v1::StageResponse> Step(const v1::ForwardRequest& forward) {
    FakeTransport t;
    auto h = std::make_shared<SessionHandler>(env_, &t, absl::InfiniteFuture());
    h->OnRequest(Open());
    auto opened = t.Await(0);
    if (!opened.ok()) return opened.status();
    v1::StageRequest req;
    *req.mutable_forward() = forward;
    h->OnRequest(req);
    auto r = t.Await(1);
    h->OnDone();
    return r;
  }
  std::unique_ptr<StageHost> host_;
  std::unique_ptr<TrainingJobs> jobs_;
  SessionEnv env_;
};

TEST_F(ZeroDeviceBlocksTest, TokenIdsGoUpAndLogitsEqualMonolithic) {
  const std::vector<int32_t> tokens = {5, 9, 13, 2, 7};
  v1::ForwardRequest f;
  f.mutable_tokens()->Add(tokens.begin(), tokens.end());
  auto r = Step(f);
  ASSERT_TRUE(r.ok()) << r.status();
  auto logits = wire::Decode(r->forward().output(), 0, "logits");
  ASSERT_TRUE(logits.ok()) << logits.status();
  auto whole = LocalPipeline::Load(*store_, {});
  ASSERT_TRUE(whole.ok());
  auto want = (*whole)->NewSequence()->ForwardAll(tokens);
  ASSERT_TRUE(want.ok());
  EXPECT_LE(((*logits) - *want).abs().max().item<double>(), 1e-5);
}

TEST_F(ZeroDeviceBlocksTest, WrongInputsAndTrainingAreRefused) {
  v1::ForwardRequest hidden;
  ASSERT_TRUE(wire::Encode(at::ones({1, store_->config().hidden_size}),
                           v1::CODEC_FP32, hidden.mutable_hidden())
                  .ok());
  auto r = Step(hidden);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("forward.hidden: this hop embeds"));
  v1::ForwardRequest oov;
  oov.add_tokens(3);
  oov.add_tokens(store_->config().vocab_size);
  r = Step(oov);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("forward.tokens[1]: id 512 outside the vocabulary"));
  EXPECT_THAT(std::string(Step(v1::ForwardRequest()).status().message()),
              HasSubstr("forward.tokens: 0 ids"));
  // A checked step carries at most kMaxDraftTokens drafts: each costs the
  // stage's batcher a pass over the vocabulary.
  v1::ForwardRequest many;
  v1::DraftCheck* dc = many.mutable_draft_check();
  dc->set_temperature(1.0f);
  dc->set_top_p(1.0f);
  many.add_tokens(1);
  for (int i = 0; i <= kMaxDraftTokens; ++i) {
    many.add_tokens(3);
    dc->add_draft_tokens(3);
    dc->add_draft_probs(1e-6f);
    dc->add_uniforms(0);
  }
  EXPECT_THAT(std::string(Step(many).status().message()),
              HasSubstr("checks 33 drafts (at most 32)"));

  // Ids to a hop whose stage starts after block 0.
  FakeTransport t;
  auto h = std::make_shared<SessionHandler>(servers_.factory.envs["a"], &t,
                                            absl::InfiniteFuture());
  h->OnRequest(OpenRequest());
  ASSERT_TRUE(t.Await(0).ok());
  v1::StageRequest ids;
  ids.mutable_forward()->add_tokens(4);
  h->OnRequest(ids);
  (void)t.Await(1);
  h->OnDone();
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("forward.tokens: this hop does not embed"));

  FakeTransport tt;
  auto th = std::make_shared<SessionHandler>(env_, &tt, absl::InfiniteFuture());
  th->OnRequest(Open(/*training=*/true));
  (void)tt.Await(0);
  th->OnDone();
  EXPECT_EQ(tt.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      std::string(tt.status().message()),
      HasSubstr("training needs the device to hold at least one block"));
}

}  // namespace
}  // namespace edgesplit
