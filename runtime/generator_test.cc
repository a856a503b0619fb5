#include "runtime/generator.h"

#include "base/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model_store.h"
#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/hf_tokenizer.h"
#include "testing/test_models.h"

namespace edgesplit {
namespace {

// Emits a scripted token sequence: after the n-th Forward call the logits
// favour script[n].
class ScriptedModel : public LogitsModel {
 public:
  ScriptedModel(std::vector<int32_t> script, int32_t vocab, int64_t context)
      : script_(std::move(script)), vocab_(vocab), context_(context) {}
  absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const int32_t> tokens) override {
    fed_ += tokens.size();
    if (fed_ > context_) return absl::OutOfRangeError("context exceeded");
    std::vector<float> logits(vocab_, 0.0f);
    logits[script_[std::min(calls_++, script_.size() - 1)]] = 10.0f;
    return logits;
  }
  int64_t context_length() const override { return context_; }
  int64_t fed() const { return fed_; }

 private:
  std::vector<int32_t> script_;
  int32_t vocab_;
  int64_t context_;
  size_t calls_ = 0;
  int64_t fed_ = 0;
};

GenerationOptions Greedy(int n) {
  GenerationOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = n;
  return o;
}

TEST(GeneratorTest, StopsAtEosAndAtMaxTokens) {
  ScriptedModel m({5, 6, 2, 7}, 10, 100);
  auto r = GenerateIds(m, {1, 3}, Greedy(10), /*eos_id=*/2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens, (std::vector<int32_t>{5, 6}));
  EXPECT_TRUE(r->stopped_at_eos);
  ScriptedModel m2({5, 6, 2, 7}, 10, 100);
  r = GenerateIds(m2, {1, 3}, Greedy(2), /*eos_id=*/2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens, (std::vector<int32_t>{5, 6}));
  EXPECT_FALSE(r->stopped_at_eos);
  EXPECT_EQ(m2.fed(), 3);  // The last token is never fed back.
}

TEST(GeneratorTest, StopsAtMoreEosIdsLikeAtEos) {
  ScriptedModel m({5, 6, 7, 8, 2}, 16, 512);
  GenerationOptions g = Greedy(10);
  g.more_eos_ids = {7};  // A chat model's end of turn.
  auto r = GenerateIds(m, {1, 3}, g, /*eos_id=*/2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens, (std::vector<int32_t>{5, 6}));
  EXPECT_TRUE(r->stopped_at_eos);
  g.stop_at_eos = false;  // Ignored with EOS.
  ScriptedModel m2({5, 6, 7, 8, 2}, 16, 512);
  r = GenerateIds(m2, {1, 3}, g, 2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tokens.size(), 10u);
}

TEST(GeneratorTest, StopsCleanlyWhenTheContextIsFull) {
  ScriptedModel m({4}, 10, /*context=*/6);
  auto r = GenerateIds(m, {1, 1, 1, 1}, Greedy(50), -1);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens.size(), 3u);  // 4 prompt + 2 fed back = 6.
  EXPECT_TRUE(r->stopped_at_context);
  ScriptedModel tight({4}, 10, 3);
  EXPECT_EQ(GenerateIds(tight, {1, 1, 1, 1}, Greedy(5), -1).status().code(),
            absl::StatusCode::kOutOfRange);
}

// Streaming emits exactly the final text, in order, even when a character
// arrives as separate byte-fallback pieces.
TEST(GeneratorTest, StreamedTextEqualsFinalText) {
  auto store = ModelStore::Open(testing::TinyModel(Arch::kLlama));
  ASSERT_TRUE(store.ok());
  auto tok = (*store)->LoadTokenizer();
  ASSERT_TRUE(tok.ok());
  auto piece_ids = (*tok)->Encode("the robot 世界 said hello");
  ASSERT_TRUE(piece_ids.ok());
  std::vector<int32_t> script = *piece_ids;
  script.push_back(2);
  ScriptedModel m(script, (*store)->config().vocab_size, 512);
  std::string streamed;
  int chunks = 0;
  auto r = Generate(m, **tok, "Once", Greedy(100), [&](absl::string_view t) {
    streamed += std::string(t);
    ++chunks;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, " the robot 世界 said hello");
  EXPECT_EQ(streamed, r->text);
  EXPECT_GT(chunks, 3);
  // No chunk may split a UTF-8 character: each chunk was valid on its own.
  EXPECT_EQ(streamed.find("\xEF\xBF\xBD"), std::string::npos);
}

// Stop strings: generation ends at the token that completes one; the
// streamed and returned text end before it, even when it spans tokens.
TEST(GeneratorTest, StopsAtAStopStringSpanningTokens) {
  auto store = ModelStore::Open(testing::TinyModel(Arch::kLlama));
  ASSERT_TRUE(store.ok());
  auto tok = (*store)->LoadTokenizer();
  ASSERT_TRUE(tok.ok());
  auto ids = (*tok)->Encode("the robot said hello to the robot");
  ASSERT_TRUE(ids.ok());
  ASSERT_GT(ids->size(), 4u);
  std::vector<int32_t> script = *ids;
  script.push_back(2);
  for (const std::vector<std::string>& stop :
       std::vector<std::vector<std::string>>{{"said h"}, {"zzz", "d hel"}}) {
    ScriptedModel m(script, (*store)->config().vocab_size, 512);
    std::string streamed;
    GenerationOptions g = Greedy(100);
    auto r = GenerateTextFromIds(
        **tok, *(*tok)->EncodePrompt("Once"),
        [&](absl::string_view t) { streamed += std::string(t); },
        [&](absl::Span<const int32_t> p, int32_t eos,
            const TokenCallback& on_token) {
          return GenerateIds(m, p, g, eos, on_token);
        },
        stop);
    ASSERT_TRUE(r.ok()) << r.status();
    const std::string want =
        stop.size() == 1 ? " the robot " : " the robot sai";
    EXPECT_EQ(r->text, want);
    EXPECT_EQ(streamed, want);
    EXPECT_TRUE(r->stopped_at_stop);
    EXPECT_FALSE(r->stopped_at_eos);
    // It stopped at the token that completed the stop string, not later.
    EXPECT_LT(r->tokens.size(), script.size() - 3);
  }
  // No stop string in the text: everything streams, held-back tails too.
  ScriptedModel m(script, (*store)->config().vocab_size, 512);
  std::string streamed;
  auto r = Generate(m, **tok, "Once", Greedy(100),
                    [&](absl::string_view t) { streamed += std::string(t); });
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->stopped_at_stop);
  EXPECT_EQ(streamed, " the robot said hello to the robot");
}

TEST(GeneratorTest, StopStringFilterHoldsBackOnlyPossibleStarts) {
  std::string out;
  StopStringFilter f({"<|im_end|>", "ab"},
                     [&](absl::string_view t) { out += std::string(t); });
  EXPECT_TRUE(f.Add("hello <|im"));
  EXPECT_EQ(out, "hello ");  // "<|im" may begin the stop string.
  EXPECT_TRUE(f.Add("_x a"));
  EXPECT_EQ(out, "hello <|im_x ");  // "a" may begin "ab".
  EXPECT_FALSE(f.Add("b and more"));
  EXPECT_EQ(out, "hello <|im_x ");
  EXPECT_TRUE(f.stopped());
  EXPECT_FALSE(f.Add("later"));
  f.Finish();
  EXPECT_EQ(out, "hello <|im_x ");
  std::string rest;
  StopStringFilter g({"END"},
                     [&](absl::string_view t) { rest += std::string(t); });
  EXPECT_TRUE(g.Add("the EN"));
  g.Finish();  // The text ended: the held-back "EN" is released.
  EXPECT_EQ(rest, "the EN");
  auto store = ModelStore::Open(testing::TinyModel(Arch::kLlama));
  ASSERT_TRUE(store.ok());
  auto tok = (*store)->LoadTokenizer();
  ASSERT_TRUE(tok.ok());
  auto bad = GenerateTextFromIds(
      **tok, {1}, nullptr,
      [](absl::Span<const int32_t>, int32_t, const TokenCallback&) {
        return absl::StatusOr<GenerationResult>(GenerationResult{});
      },
      {""});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

// tokenizer.json pipelines whose decoders look at neighbouring tokens
// (Llama 2's Strip after Fuse, Metaspace's first token, byte-level bytes of
// one character spread over several tokens) stream the same text as they
// decode at the end.
std::unique_ptr<HfTokenizer> HfPipeline(bool byte_level) {
  using json = nlohmann::json;
  json vocab = json::object();
  json j;
  if (byte_level) {
    const ByteMap& map = GetByteMap();
    for (int b = 0; b < 256; ++b) {
      std::string c;
      utf8::Append(map.byte_to_cp[map.order[b]], &c);
      vocab[c] = b;
    }
    vocab["\xC4\xA0t"] = 256;  // "Ġt"
    j["added_tokens"] =
        json::array({{{"id", 257}, {"content", "</s>"}, {"special", true}}});
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
    j["decoder"] = {{"type", "ByteLevel"}};
    j["model"] = {{"type", "BPE"},
                  {"vocab", vocab},
                  {"merges", json::array({"\xC4\xA0 t"})}};
  } else {
    int id = 0;
    for (const char* t :
         {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "t", "h", "e",
          "\xE2\x96\x81t", "r", "o", "b", "s", "a", "i", "d", "l"}) {
      vocab[t] = id++;
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      vocab[name] = id++;
    }
    j["normalizer"] = {
        {"type", "Sequence"},
        {"normalizers",
         json::array({{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                      {{"type", "Replace"},
                       {"pattern", {{"String", " "}}},
                       {"content", "\xE2\x96\x81"}}})}};
    j["decoder"] = {
        {"type", "Sequence"},
        {"decoders", json::array({{{"type", "Replace"},
                                   {"pattern", {{"String", "\xE2\x96\x81"}}},
                                   {"content", " "}},
                                  {{"type", "ByteFallback"}},
                                  {{"type", "Fuse"}},
                                  {{"type", "Strip"},
                                   {"content", " "},
                                   {"start", 1},
                                   {"stop", 0}}})}};
    j["model"] = {{"type", "BPE"},
                  {"vocab", vocab},
                  {"byte_fallback", true},
                  {"unk_token", "<unk>"},
                  {"merges", json::array({"\xE2\x96\x81 t"})}};
  }
  auto tok = HfTokenizer::Parse(j.dump(), "test tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  if (!tok.ok()) return nullptr;
  (*tok)->set_special_tokens(-1, *(*tok)->TokenToId("</s>"), false);
  return *std::move(tok);
}

TEST(GeneratorTest, StreamedTextEqualsFinalTextWithTokenizerJson) {
  for (bool byte_level : {true, false}) {
    std::unique_ptr<HfTokenizer> tok = HfPipeline(byte_level);
    ASSERT_NE(tok, nullptr);
    auto script = tok->Encode(" the robot \xE4\xB8\x96\xE7\x95\x8C said hi");
    ASSERT_TRUE(script.ok()) << script.status();
    script->push_back(tok->eos_id());
    ScriptedModel m(*script, tok->vocab_size(), 512);
    std::string streamed;
    int chunks = 0;
    auto r = Generate(m, *tok, "the", Greedy(100), [&](absl::string_view t) {
      streamed += std::string(t);
      ++chunks;
    });
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->stopped_at_eos);
    // Llama 2's normalizer prepends its own space marker to the text.
    EXPECT_EQ(r->text, std::string(byte_level ? "" : " ") +
                           " the robot \xE4\xB8\x96\xE7\x95\x8C said hi")
        << byte_level;
    EXPECT_EQ(streamed, r->text) << byte_level;
    EXPECT_GT(chunks, 3);
    EXPECT_EQ(streamed.find("\xEF\xBF\xBD"), std::string::npos);
  }
}

}  // namespace
}  // namespace edgesplit
