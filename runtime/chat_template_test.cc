#include "runtime/chat_template.h"

#include <fstream>

#include "base/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model_config.h"
#include "runtime/tokenizer/hf_tokenizer.h"
#include "testing/gguf_writer.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr char kLlama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% "
    "set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% "
    "if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif "
    "%}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// The real model's SentencePiece tokenizer, EOS 2.
absl::StatusOr<std::unique_ptr<Tokenizer>> StoriesTokenizer(int bos) {
  ModelConfig config;
  config.bos_token_id = bos;
  config.eos_token_id = 2;
  return LoadTokenizer(testing::SharedDir() + "/models/stories260K", config);
}

TEST(ChatTemplateTest, LoadsTheFormsModelsShip) {
  const std::string dir = testing::TempDir("chat_template_forms");
  // A string, with tokens written as AddedToken objects.
  Write(dir + "/tokenizer_config.json",
        json{{"chat_template", kLlama3},
             {"bos_token", {{"content", "<|begin_of_text|>"}}},
             {"eos_token", "<|eot_id|>"}}
            .dump());
  auto t = ChatTemplate::Load(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->bos_token(), "<|begin_of_text|>");
  auto text = (*t)->Render({{"system", "Be brief."}, {"user", " Hi \n"}}, true);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  // Named templates: "default" is used.
  Write(
      dir + "/tokenizer_config.json",
      json{{"chat_template",
            {{{"name", "tool_use"}, {"template", "tools"}},
             {{"name", "default"}, {"template", "{{ messages[0].content }}"}}}}}
          .dump());
  t = ChatTemplate::Load(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*(*t)->Render({{"user", "hello"}}, false), "hello");
  // chat_template.jinja wins over the config's field.
  Write(dir + "/chat_template.jinja", "jinja:{{ messages | length }}\n");
  t = ChatTemplate::Load(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*(*t)->Render({{"user", "a"}, {"assistant", "b"}}, false),
            "jinja:2");
}

// GGUF files carry the template as tokenizer.chat_template and the
// special tokens as ids into tokenizer.ggml.tokens.
TEST(ChatTemplateTest, LoadsAGgufFilesTemplate) {
  testing::GgufWriter w;
  w.KvString("general.architecture", "llama");
  w.KvString("tokenizer.chat_template",
             "{{ bos_token }}{% for m in messages %}<{{ m.role }}>"
             "{{ m.content }}{{ eos_token }}{% endfor %}");
  w.KvStrings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>"});
  w.KvU32("tokenizer.ggml.bos_token_id", 1);
  w.KvU32("tokenizer.ggml.eos_token_id", 2);
  const std::string path = testing::TempDir("chat_gguf") + "/m.gguf";
  ASSERT_TRUE(WriteFileAtomically(path, w.Build()).ok());
  auto t = ChatTemplate::Load(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*(*t)->Render({{"user", "hi"}}, false), "<s><user>hi</s>");
  testing::GgufWriter bare;
  bare.KvString("general.architecture", "llama");
  const std::string none = testing::TempDir("chat_gguf_none") + "/m.gguf";
  ASSERT_TRUE(WriteFileAtomically(none, bare.Build()).ok());
  auto missing = ChatTemplate::Load(none);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()),
              ::testing::HasSubstr("tokenizer.chat_template"));
}

TEST(ChatTemplateTest, ErrorsNameTheFileAndField) {
  const std::string dir = testing::TempDir("chat_template_errors");
  auto none = ChatTemplate::Load(dir);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("no chat template"));
  Write(dir + "/tokenizer_config.json", json{{"chat_template", 3}}.dump());
  EXPECT_THAT(ChatTemplate::Load(dir).status().message(),
              HasSubstr("tokenizer_config.json: chat_template: expected a "
                        "string"));
  Write(dir + "/tokenizer_config.json",
        json{{"chat_template", "{% for %}"}}.dump());
  EXPECT_THAT(ChatTemplate::Load(dir).status().message(),
              HasSubstr("tokenizer_config.json chat_template:1: expected a "
                        "name"));
  // A malformed named list is refused, not thrown on.
  Write(dir + "/tokenizer_config.json",
        json{{"chat_template", {{{"name", 1}, {"template", "x"}}}}}.dump());
  EXPECT_THAT(ChatTemplate::Load(dir).status().message(),
              HasSubstr("no template named \"default\""));
  Write(dir + "/tokenizer_config.json",
        json{{"chat_template", "x"}, {"bos_token", 5}}.dump());
  EXPECT_THAT(ChatTemplate::Load(dir).status().message(),
              HasSubstr("bos_token: expected a string"));
  // The template's own refusal reaches the caller.
  auto t = ChatTemplate::Parse(
      "{% if messages[0].role != 'user' %}{{ raise_exception('user first') "
      "}}{% endif %}",
      "", "", "t");
  ASSERT_TRUE(t.ok());
  EXPECT_THAT((*t)->Render({{"assistant", "x"}}, true).status().message(),
              HasSubstr("user first"));
}

// The template writes BOS itself: tokenizer.json matches it as its special
// token; SentencePiece (which would spell "<s>" out) gets the BOS id for a
// leading bos_token. Neither adds a second BOS.
TEST(ChatTemplateTest, EncodesTheTemplatesSpecialTokensOnce) {
  auto t = ChatTemplate::Parse(
      "{{ bos_token }}[INST] {{ messages[0].content "
      "}} [/INST]",
      "<s>", "</s>", "t");
  ASSERT_TRUE(t.ok());
  auto text = (*t)->Render({{"user", "Once upon a time"}}, true);
  ASSERT_TRUE(text.ok());
  auto spm = StoriesTokenizer(/*bos=*/1);
  ASSERT_TRUE(spm.ok()) << spm.status();
  auto ids = (*t)->Encode(**spm, *text);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, *(*spm)->EncodePrompt("[INST] Once upon a time [/INST]"));
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 1), 1);

  json j = {
      {"added_tokens",
       json::array({{{"id", 3}, {"content", "<s>"}, {"special", true}}})},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", {{"a", 0}, {"b", 1}}},
        {"merges", json::array()}}}};
  auto hf = HfTokenizer::Parse(j.dump(), "t.json");
  ASSERT_TRUE(hf.ok()) << hf.status();
  auto hf_ids = (*t)->Encode(**hf, "<s>ab");
  ASSERT_TRUE(hf_ids.ok());
  EXPECT_EQ(*hf_ids, (std::vector<int32_t>{3, 0, 1}));
  // Turns end at eos_token's id where the tokenizer knows it as a token.
  EXPECT_EQ((*t)->TurnEndId(**spm), -1);  // Text-only special tokens.
  EXPECT_EQ((*t)->TurnEndId(**hf), -1);   // "</s>" is not one token here.
  auto chatml =
      ChatTemplate::Parse("{{ messages[0].content }}", "<s>", "<s>", "chatml");
  ASSERT_TRUE(chatml.ok());
  EXPECT_EQ((*chatml)->TurnEndId(**hf), 3);
  // An ordinary one-token word is no turn end.
  auto word = ChatTemplate::Parse("x", "<s>", "a", "word");
  ASSERT_TRUE(word.ok());
  EXPECT_EQ((*word)->TurnEndId(**hf), -1);
}

// Llama 2's template (as its tokenizer_config.json ships it) writes
// "</s><s>" between turns. With a SentencePiece tokenizer each becomes its
// id, and the ids equal Meta's chat_completion: every exchange encoded on
// its own with BOS and EOS, the last question with BOS only.
TEST(ChatTemplateTest, SpecialTokensBetweenTurnsBecomeTheirIds) {
  constexpr char kLlama2[] =
      "{% if messages[0]['role'] == 'system' %}{% set loop_messages = "
      "messages[1:] %}{% set system_message = messages[0]['content'] %}{% "
      "else %}{% set loop_messages = messages %}{% set system_message = false "
      "%}{% endif %}{% for message in loop_messages %}{% if (message['role'] "
      "== 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
      "roles must alternate user/assistant/user/assistant/...') }}{% endif "
      "%}{% if loop.index0 == 0 and system_message != false %}{% set content = "
      "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
      "message['content'] %}{% else %}{% set content = message['content'] %}{% "
      "endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
      "content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' "
      "%}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
  auto t = ChatTemplate::Parse(kLlama2, "<s>", "</s>", "llama2");
  ASSERT_TRUE(t.ok()) << t.status();
  auto text = (*t)->Render({{"system", "Be brief."},
                            {"user", "Who was Lily?"},
                            {"assistant", "A girl. "},
                            {"user", "What did she find?"}},
                           true);
  ASSERT_TRUE(text.ok()) << text.status();
  ASSERT_EQ(*text,
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWho was Lily? [/INST] "
            "A girl. </s><s>[INST] What did she find? [/INST]");
  auto spm = StoriesTokenizer(/*bos=*/1);
  ASSERT_TRUE(spm.ok()) << spm.status();
  auto ids = (*t)->Encode(**spm, *text);
  ASSERT_TRUE(ids.ok()) << ids.status();

  std::vector<int32_t> want = {1};
  for (const char* piece :
       {"[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWho was Lily? [/INST] A "
        "girl. ",
        "[INST] What did she find? [/INST]"}) {
    auto part = (*spm)->Encode(piece);
    ASSERT_TRUE(part.ok());
    want.insert(want.end(), part->begin(), part->end());
    want.push_back(2);
    want.push_back(1);
  }
  want.resize(want.size() - 2);  // The question has no EOS, no next BOS.
  EXPECT_EQ(*ids, want);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 1), 2);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 2), 1);

  // A tokenizer without a BOS id spells bos_token out; "</s>" still splits.
  auto no_bos = StoriesTokenizer(/*bos=*/-1);
  ASSERT_TRUE(no_bos.ok());
  auto spelled = (*t)->Encode(**no_bos, "x</s><s>y");
  ASSERT_TRUE(spelled.ok());
  std::vector<int32_t> x = *(*no_bos)->Encode("x");
  x.push_back(2);
  const std::vector<int32_t> rest = *(*no_bos)->Encode("<s>y");
  x.insert(x.end(), rest.begin(), rest.end());
  EXPECT_EQ(*spelled, x);
}

}  // namespace
}  // namespace edgesplit
