#include "runtime/model_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

constexpr char kGpt2[] = R"({"model_type": "gpt2", "n_embd": 768,
  "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 50257,
  "n_inner": null, "activation_function": "gelu_new",
  "layer_norm_epsilon": 1e-05, "bos_token_id": 50256, "eos_token_id": 50256})";

TEST(ModelConfigTest, ParsesGpt2) {
  auto c = ParseModelConfig(kGpt2, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Arch::kGpt2);
  EXPECT_EQ(c->intermediate_size, 3072);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->eos_token_id, 50256);
  // GPT-2 small has 124,439,808 parameters.
  EXPECT_EQ(c->TotalParams(), 124439808);
}

TEST(ModelConfigTest, ParsesTheRealLlamaModel) {
  auto c =
      LoadModelConfig(testing::SharedDir() + "/models/stories260K/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Arch::kLlama);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_layers, 5);
  EXPECT_EQ(c->num_heads, 8);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_id, 2);
  EXPECT_EQ(c->TotalParams(), 260032);  // As ../shared/README.md states.
}

TEST(ModelConfigTest, FamilyFlags) {
  auto qwen = ParseModelConfig(R"({"model_type": "qwen2", "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64,
    "rope_theta": 1000000.0, "tie_word_embeddings": true})",
                               "q.json");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->arch, Arch::kLlama);
  EXPECT_TRUE(qwen->attention_bias);
  EXPECT_EQ(qwen->rope_theta, 1e6);
  auto mistral =
      ParseModelConfig(R"({"model_type": "mistral", "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64})",
                       "m.json");
  ASSERT_TRUE(mistral.ok());
  EXPECT_FALSE(mistral->attention_bias);
  EXPECT_EQ(mistral->num_kv_heads, 4);
  EXPECT_FALSE(mistral->tie_word_embeddings);
  EXPECT_FALSE(qwen->attention_output_bias);  // Qwen2: q/k/v biases only.
  auto llama_bias = ParseModelConfig(R"({"model_type": "llama",
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64,
    "attention_bias": true})",
                                     "l.json");
  ASSERT_TRUE(llama_bias.ok());
  EXPECT_TRUE(llama_bias->attention_output_bias);  // Llama: o_proj too.
  auto windowed = ParseModelConfig(R"({"model_type": "mistral",
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 128, "vocab_size": 100,
    "max_position_embeddings": 4096, "sliding_window": 1024})",
                                   "w.json");
  ASSERT_TRUE(windowed.ok());
  EXPECT_EQ(windowed->max_positions, 1024);
  auto mlp_bias = ParseModelConfig(R"({"model_type": "llama",
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64,
    "mlp_bias": true})",
                                   "b.json");
  EXPECT_THAT(mlp_bias.status().message(), HasSubstr("field \"mlp_bias\""));
}

TEST(ModelConfigTest, ErrorsNameFileAndField) {
  auto s = ParseModelConfig(R"({"model_type": "gpt2", "n_embd": "big"})",
                            "dir/config.json")
               .status();
  EXPECT_THAT(s.message(), HasSubstr("dir/config.json"));
  EXPECT_THAT(s.message(), HasSubstr("field \"n_embd\""));
  s = ParseModelConfig(R"({"model_type": "gpt2", "n_embd": 64})", "c.json")
          .status();
  EXPECT_THAT(s.message(), HasSubstr("field \"n_layer\": missing"));
  s = ParseModelConfig(R"({"model_type": "llama", "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 3,
    "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64})",
                       "c.json")
          .status();
  EXPECT_THAT(s.message(), HasSubstr("num_key_value_heads"));
  s = ParseModelConfig(R"({"model_type": "llama", "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64,
    "rope_scaling": {"type": "llama3"}})",
                       "c.json")
          .status();
  EXPECT_THAT(s.message(), HasSubstr("rope_scaling"));
  EXPECT_THAT(ParseModelConfig("[]", "c.json").status().message(),
              HasSubstr("not a JSON object"));
  EXPECT_THAT(ParseModelConfig("{}", "c.json").status().message(),
              HasSubstr("model_type"));
}

TEST(ModelConfigTest, DeepNestingIsRejectedNotRecursed) {
  std::string bomb = "{\"model_type\": " + std::string(200000, '[');
  auto s = ParseModelConfig(bomb, "bomb.json").status();
  EXPECT_THAT(s.message(), HasSubstr("bomb.json: JSON nested deeper"));
}

TEST(ModelConfigTest, JsonRoundTrip) {
  auto c = ParseModelConfig(kGpt2, "config.json");
  ASSERT_TRUE(c.ok());
  auto again = ParseModelConfig(ModelConfigToJson(*c), "round");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->TotalParams(), c->TotalParams());
  EXPECT_EQ(again->eos_token_id, c->eos_token_id);
}

TEST(ModelConfigTest, StageSpecValidation) {
  auto c = ParseModelConfig(kGpt2, "config.json");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(ValidateStageSpec(*c, {{0, 12}, true, true}).ok());
  EXPECT_THAT(ValidateStageSpec(*c, {{4, 13}, false, false}).message(),
              HasSubstr("[4, 13)"));
  EXPECT_FALSE(ValidateStageSpec(*c, {{5, 5}, false, false}).ok());
}

}  // namespace
}  // namespace edgesplit
