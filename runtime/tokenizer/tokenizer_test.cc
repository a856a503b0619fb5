// Tokenizers as model directories carry them (LoadTokenizer); each
// implementation has its own reference test against its library.
#include "runtime/tokenizer/tokenizer.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_store.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::TinyModel;

TEST(TokenizerTest, RandomModelsCarryWorkingTokenizers) {
  for (Arch arch : {Arch::kGpt2, Arch::kLlama}) {
    auto store = ModelStore::Open(TinyModel(arch));
    ASSERT_TRUE(store.ok());
    auto tok = (*store)->LoadTokenizer();
    ASSERT_TRUE(tok.ok()) << tok.status();
    const std::string text =
        "Once upon a time, the robot said: \"héllo 世界\"!";
    auto ids = (*tok)->Encode(text);
    ASSERT_TRUE(ids.ok());
    for (int32_t id : *ids) {
      EXPECT_LT(id, (*store)->config().vocab_size);
    }
    auto back = (*tok)->Decode(*ids);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, text) << ArchName(arch);
    // Llama prompts start with BOS; GPT-2's don't.
    auto prompt = (*tok)->EncodePrompt(text);
    ASSERT_TRUE(prompt.ok());
    if (arch == Arch::kLlama) {
      EXPECT_EQ((*prompt)[0], 1);
      EXPECT_EQ(prompt->size(), ids->size() + 1);
      EXPECT_EQ((*tok)->eos_id(), 2);
      EXPECT_LT(ids->size(), text.size()) << "BPE merges should apply";
    } else {
      EXPECT_EQ(*prompt, *ids);
      EXPECT_EQ((*tok)->eos_id(), 256);
    }
  }
}

}  // namespace
}  // namespace edgesplit
