// The real trained model in ../shared/models/stories260K (Llama
// architecture, GQA, tied head, SentencePiece): it loads with its tokenizer,
// writes its known story, and every split gives the same tokens.
#include <ATen/ATen.h>

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "runtime/generator.h"
#include "runtime/model_store.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

const std::string& ModelDir() {
  static const std::string dir = testing::SharedDir() + "/models/stories260K";
  return dir;
}

class RealModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = ModelStore::Open(ModelDir());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto tok = store_->LoadTokenizer();
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(*tok);
  }
  GenerationResult Greedy(const std::vector<int64_t>& cuts,
                          const std::string& prompt, int n) {
    auto p = LocalPipeline::Load(*store_, cuts);
    EXPECT_TRUE(p.ok()) << p.status();
    auto seq = (*p)->NewSequence();
    GenerationOptions o;
    o.sampling.temperature = 0;
    o.max_new_tokens = n;
    auto r = Generate(*seq, *tokenizer_, prompt, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return *r;
  }
  std::unique_ptr<ModelStore> store_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(RealModelTest, LoadsWithItsTokenizer) {
  EXPECT_EQ(store_->config().num_layers, 5);
  EXPECT_EQ(tokenizer_->vocab_size(), 512);
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
  EXPECT_TRUE(tokenizer_->add_bos());
  auto ids = tokenizer_->EncodePrompt("Once upon a time");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*ids)[0], 1);
  auto text = tokenizer_->Decode(*ids);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "Once upon a time");
}

// The story ../shared/README.md documents for greedy decoding.
TEST_F(RealModelTest, GreedyGenerationWritesTheKnownStory) {
  GenerationResult r = Greedy({}, "Once upon a time", 40);
  EXPECT_EQ(r.text.rfind(", there was a little girl named Lily. She loved to "
                         "play outside in the park.",
                         0),
            0u)
      << r.text;
}

TEST_F(RealModelTest, GreedyIsDeterministicAndEqualAcrossSplits) {
  const std::string prompt = "The little dog";
  GenerationResult whole = Greedy({}, prompt, 64);
  EXPECT_EQ(Greedy({}, prompt, 64).tokens, whole.tokens);
  for (const auto& cuts :
       std::vector<std::vector<int64_t>>{{2}, {1, 3}, {1, 2, 3, 4}}) {
    GenerationResult split = Greedy(cuts, prompt, 64);
    EXPECT_EQ(split.tokens, whole.tokens) << "cuts " << cuts.size();
    EXPECT_EQ(split.text, whole.text);
  }
}

TEST_F(RealModelTest, SplitLogitsEqualWholeLogits) {
  auto whole = LocalPipeline::Load(*store_, {});
  auto split = LocalPipeline::Load(*store_, {1, 4});
  ASSERT_TRUE(whole.ok() && split.ok());
  auto ids = tokenizer_->EncodePrompt("Lily and Ben went to the park.");
  ASSERT_TRUE(ids.ok());
  auto a = (*whole)->NewSequence()->ForwardAll(*ids);
  auto b = (*split)->NewSequence()->ForwardAll(*ids);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LE((*a - *b).abs().max().item<double>(), 1e-5);
}

// In-domain text: a correct implementation of the trained model predicts it
// well (a broken RoPE, GQA mapping or norm sends perplexity to hundreds).
TEST_F(RealModelTest, InDomainPerplexityIsLow) {
  std::ifstream in(testing::SharedDir() + "/data/tinystories_valid_sample.txt");
  ASSERT_TRUE(in) << "missing ../shared/data/tinystories_valid_sample.txt";
  std::string text(2000, '\0');
  in.read(text.data(), text.size());
  text.resize(in.gcount());
  auto ids = tokenizer_->EncodePrompt(text);
  ASSERT_TRUE(ids.ok());
  ids->resize(std::min<size_t>(ids->size(), 256));
  auto p = LocalPipeline::Load(*store_, {3});
  ASSERT_TRUE(p.ok());
  auto logits = (*p)->NewSequence()->ForwardAll(*ids);
  ASSERT_TRUE(logits.ok());
  at::Tensor targets =
      at::tensor(std::vector<int64_t>(ids->begin() + 1, ids->end()), at::kLong);
  at::Tensor lp = at::log_softmax(logits->narrow(0, 0, ids->size() - 1), -1);
  const double nll = -lp.gather(1, targets.unsqueeze(1)).mean().item<double>();
  const double ppl = std::exp(nll);
  RecordProperty("perplexity", std::to_string(ppl));
  EXPECT_LT(ppl, 12.0) << "perplexity " << ppl;
}

}  // namespace
}  // namespace edgesplit
