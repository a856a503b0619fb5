#include "edge_server/batcher.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "runtime/model_store.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

class BatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = ModelStore::Open(testing::TinyModel(Arch::kLlama));
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    auto stage = StageModel::Load(*store_, {{2, 4}, false, true});
    ASSERT_TRUE(stage.ok());
    stage_ = std::move(*stage);
  }
  std::unique_ptr<ModelStore> store_;
  std::unique_ptr<StageModel> stage_;
};

// Concurrent submissions are merged into fewer forwards and each gets
// exactly what it would get alone.
TEST_F(BatcherTest, BatchedEqualsAloneAndMerges) {
  const int n = 12;
  const int64_t H = store_->config().hidden_size;
  std::vector<at::Tensor> inputs;
  std::vector<std::unique_ptr<SequenceKvCache>> caches, alone_caches;
  for (int i = 0; i < n; ++i) {
    inputs.push_back(at::randn({1 + i % 3, H}));
    caches.push_back(stage_->NewCache(nullptr));
    alone_caches.push_back(stage_->NewCache(nullptr));
  }
  std::vector<at::Tensor> outs(n);
  {
    Batcher batcher(stage_.get(), 1024);
    std::vector<absl::Notification> done(n);
    for (int i = 0; i < n; ++i) {
      BatchItem item;
      item.cache = caches[i].get();
      item.input = inputs[i];
      item.last_token_only = true;
      item.done = [&, i](absl::StatusOr<at::Tensor> r) {
        ASSERT_TRUE(r.ok()) << r.status();
        outs[i] = *r;
        done[i].Notify();
      };
      batcher.Submit(std::move(item));
    }
    for (auto& d : done) d.WaitForNotification();
    EXPECT_LT(batcher.stats().forwards, n);
    EXPECT_EQ(batcher.stats().items, n);
  }
  for (int i = 0; i < n; ++i) {
    StageInput in;
    in.sequences = {{alone_caches[i].get(), inputs[i].size(0)}};
    in.hidden = inputs[i];
    in.last_token_only = true;
    auto want = stage_->Forward(in);
    ASSERT_TRUE(want.ok());
    EXPECT_LE((outs[i] - *want).abs().max().item<double>(), 1e-5) << i;
  }
}

// Sessions of different LoRA adapters (and none) share forwards and each
// gets what it would get alone with its adapter.
TEST_F(BatcherTest, MixedAdaptersShareForwardsAndEqualAlone) {
  const int n = 12;
  const int64_t H = store_->config().hidden_size;
  std::vector<std::shared_ptr<const LoraAdapter>> adapters = {nullptr};
  for (int64_t rank : {4, 16}) {
    LoraConfig c;
    c.r = rank;
    c.alpha = 2.0 * static_cast<double>(rank);
    c.target_modules = {"q_proj", "v_proj", "down_proj"};
    auto a = LoraAdapter::Create(store_->config(), c, {2, 4},
                                 static_cast<uint64_t>(rank),
                                 absl::StrCat("r", rank), /*zero_b=*/false);
    ASSERT_TRUE(a.ok());
    adapters.push_back(std::move(*a));
  }
  std::vector<at::Tensor> inputs;
  std::vector<std::unique_ptr<SequenceKvCache>> caches, alone_caches;
  for (int i = 0; i < n; ++i) {
    inputs.push_back(at::randn({1 + i % 2, H}));
    caches.push_back(stage_->NewCache(nullptr));
    alone_caches.push_back(stage_->NewCache(nullptr));
  }
  std::vector<at::Tensor> outs(n);
  {
    Batcher batcher(stage_.get(), 1024);
    std::vector<absl::Notification> done(n);
    for (int i = 0; i < n; ++i) {
      BatchItem item;
      item.cache = caches[i].get();
      item.input = inputs[i];
      item.last_token_only = true;
      item.adapter = adapters[i % 3];
      item.done = [&, i](absl::StatusOr<at::Tensor> r) {
        ASSERT_TRUE(r.ok()) << r.status();
        outs[i] = *r;
        done[i].Notify();
      };
      batcher.Submit(std::move(item));
    }
    for (auto& d : done) d.WaitForNotification();
    EXPECT_LT(batcher.stats().forwards, n);
  }
  for (int i = 0; i < n; ++i) {
    StageInput in;
    in.sequences = {{alone_caches[i].get(), inputs[i].size(0)}};
    in.hidden = inputs[i];
    in.last_token_only = true;
    in.sequence_adapters = {adapters[i % 3].get()};
    auto want = stage_->Forward(in);
    ASSERT_TRUE(want.ok());
    EXPECT_LE((outs[i] - *want).abs().max().item<double>(), 1e-5) << i;
    if (i % 3 != 0) {
      // The adapter mattered.
      in.sequence_adapters.clear();
      in.sequences = {{stage_->NewCache(nullptr).release(), inputs[i].size(0)}};
      std::unique_ptr<SequenceKvCache> owned(in.sequences[0].cache);
      auto base = stage_->Forward(in);
      ASSERT_TRUE(base.ok());
      EXPECT_GT((outs[i] - *base).abs().max().item<double>(), 1e-4) << i;
    }
  }
}

// One session's failure (its KV budget is full) fails only that session.
TEST_F(BatcherTest, FailureIsIsolatedToItsSession) {
  const int64_t H = store_->config().hidden_size;
  KvBudget tiny(1);
  auto good = stage_->NewCache(nullptr);
  auto bad = stage_->NewCache(&tiny);
  Batcher batcher(stage_.get(), 1024);
  absl::Notification d1, d2;
  absl::Status s1, s2;
  // Hold the worker with a first item so both land in one batch.
  for (auto [cache, status, note] : {std::make_tuple(good.get(), &s1, &d1),
                                     std::make_tuple(bad.get(), &s2, &d2)}) {
    BatchItem item;
    item.cache = cache;
    item.input = at::randn({2, H});
    item.done = [status = status, note = note](absl::StatusOr<at::Tensor> r) {
      *status = r.status();
      note->Notify();
    };
    batcher.Submit(std::move(item));
  }
  d1.WaitForNotification();
  d2.WaitForNotification();
  EXPECT_TRUE(s1.ok()) << s1;
  EXPECT_EQ(s2.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(good->length(), 2);
  EXPECT_EQ(bad->length(), 0);
}

// Runs `input` through a batcher with a budget of `max_tokens` rows.
absl::StatusOr<at::Tensor> RunOne(const StageModel* stage, int64_t max_tokens,
                                  SequenceKvCache* cache, at::Tensor input,
                                  bool last_token_only) {
  Batcher batcher(stage, max_tokens);
  absl::Notification done;
  absl::StatusOr<at::Tensor> out;
  BatchItem item;
  item.cache = cache;
  item.input = std::move(input);
  item.last_token_only = last_token_only;
  item.done = [&](absl::StatusOr<at::Tensor> r) {
    out = std::move(r);
    done.Notify();
  };
  batcher.Submit(std::move(item));
  done.WaitForNotification();
  return out;
}

// A prompt longer than max_batch_tokens runs in chunks (bounded activation
// and attention memory) and gives what one forward gives.
TEST_F(BatcherTest, LongPromptRunsInChunksEqualToOneForward) {
  const int64_t H = store_->config().hidden_size;
  const at::Tensor prompt = at::randn({37, H});
  for (bool last_only : {false, true}) {
    auto whole_cache = stage_->NewCache(nullptr);
    auto want =
        RunOne(stage_.get(), 1024, whole_cache.get(), prompt, last_only);
    ASSERT_TRUE(want.ok()) << want.status();
    auto chunked_cache = stage_->NewCache(nullptr);
    auto got = RunOne(stage_.get(), 8, chunked_cache.get(), prompt, last_only);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->sizes(), want->sizes()) << last_only;
    EXPECT_LE((*got - *want).abs().max().item<double>(), 1e-5) << last_only;
    EXPECT_EQ(chunked_cache->length(), 37);
    // The next decode step sees the same cache.
    const at::Tensor next = at::randn({1, H});
    auto a = RunOne(stage_.get(), 1024, whole_cache.get(), next, true);
    auto b = RunOne(stage_.get(), 8, chunked_cache.get(), next, true);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_LE((*a - *b).abs().max().item<double>(), 1e-5) << last_only;
  }
}

// A middle stage (no head) passes every row on even when the device asks
// for the last token's logits: chunked, it must join every chunk (it
// answered the last chunk alone, and Execute's split of the batch then
// threw outside any handler and terminated the server).
TEST_F(BatcherTest, MiddleStageChunksPassEveryRowOn) {
  auto middle = StageModel::Load(*store_, {{1, 2}, false, false});
  ASSERT_TRUE(middle.ok()) << middle.status();
  const at::Tensor prompt = at::randn({37, store_->config().hidden_size});
  auto whole_cache = (*middle)->NewCache(nullptr);
  auto want = RunOne(middle->get(), 1024, whole_cache.get(), prompt, true);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_EQ(want->size(0), 37);
  auto chunked_cache = (*middle)->NewCache(nullptr);
  auto got = RunOne(middle->get(), 8, chunked_cache.get(), prompt, true);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->sizes(), want->sizes());
  EXPECT_LE((*got - *want).abs().max().item<double>(), 1e-5);
}

// A chunk that fails (here the KV budget, after two chunks fitted) leaves
// the cache as it was before the prompt, as a single forward would.
TEST_F(BatcherTest, FailedChunkRollsBackTheWholePrompt) {
  const int64_t H = store_->config().hidden_size;
  auto probe = stage_->NewCache(nullptr);
  ASSERT_TRUE(probe->Reserve(16).ok());
  KvBudget budget(probe->reserved_bytes());  // 16 tokens' worth.
  auto cache = stage_->NewCache(&budget);
  auto out = RunOne(stage_.get(), 8, cache.get(), at::randn({30, H}), true);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted)
      << out.status();
  EXPECT_EQ(cache->length(), 0);
  // The session goes on with what fits.
  auto ok = RunOne(stage_.get(), 8, cache.get(), at::randn({12, H}), true);
  EXPECT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(cache->length(), 12);
}

}  // namespace
}  // namespace edgesplit
