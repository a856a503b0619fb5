// tokenizer.json against Hugging Face's own library: the npm package
// @anush008/tokenizers (the Rust `tokenizers` crate, prebuilt) trains a BPE
// for each of nine pipelines that mirror what model families ship (GPT-2,
// RoBERTa, Llama 3, Qwen2, Llama 2, Mistral, Gemma, and two covering the
// remaining components), writes the tokenizer.json, and records its ids and
// decodings on ~300 texts (tests/js/hf_tokenizers_reference.js). Every id and
// every decoded string here must be identical.
#include "runtime/tokenizer/hf_tokenizer.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model_config.h"
#include "runtime/tokenizer/onig_regex.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr char kInstallHint[] =
    "the reference tokenizers are not installed: run `npm ci --prefix "
    "tests/js` in the repository root (needs node and npm)";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs the reference once per process; the directory with one
// subdirectory per configuration, or why it could not.
struct Reference {
  std::string dir;
  std::string problem;
};

const Reference& GetReference() {
  static const Reference* const ref = [] {
    auto* r = new Reference;
    const std::string src = testing::SourceDir();
    if (std::system("node --version > /dev/null 2>&1") != 0) {
      r->problem = absl::StrCat("`node` is not on PATH; ", kInstallHint);
      return r;
    }
    if (!fs::exists(src + "/tests/js/node_modules/@anush008/tokenizers")) {
      r->problem = kInstallHint;
      return r;
    }
    r->dir = testing::TempDir("hf_tokenizer_reference");
    const std::string command = absl::StrCat(
        "node ", ShellQuote(src + "/tests/js/hf_tokenizers_reference.js"), " ",
        ShellQuote(r->dir), " ",
        ShellQuote(testing::SharedDir() + "/data/tinystories_valid_sample.txt"),
        " > ", ShellQuote(r->dir + "/log.txt"), " 2>&1");
    if (std::system(command.c_str()) != 0) {
      r->problem =
          absl::StrCat(command, " failed:\n", ReadAll(r->dir + "/log.txt"));
    }
    return r;
  }();
  return *ref;
}

std::string Show(const std::vector<int32_t>& ids) {
  return absl::StrCat("[", absl::StrJoin(ids, ", "), "]");
}

class HfReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfReferenceTest, IdsAndDecodingsMatchTheLibrary) {
  const Reference& ref = GetReference();
  // Never skip: CI installs the reference, so its absence is a failure.
  ASSERT_TRUE(ref.problem.empty()) << ref.problem;
  const std::string dir = ref.dir + "/" + GetParam();
  auto tok = LoadHfTokenizer(dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const json expected = json::parse(ReadAll(dir + "/expected.json"));
  ASSERT_GT(expected.size(), 250u);
  int failures = 0;
  for (const json& e : expected) {
    const std::string text = e["text"].get<std::string>();
    const auto want = e["ids"].get<std::vector<int32_t>>();
    const auto want_special = e["ids_special"].get<std::vector<int32_t>>();
    auto ids = (*tok)->Encode(text);
    auto ids_special = (*tok)->EncodePrompt(text);
    ASSERT_TRUE(ids.ok() && ids_special.ok()) << ids.status();
    auto decoded = (*tok)->Decode(want);
    auto decoded_special = (*tok)->Decode(want_special);
    auto decoded_skip = (*tok)->Decode(want_special, true);
    ASSERT_TRUE(decoded.ok() && decoded_special.ok() && decoded_skip.ok());
    const bool ok =
        *ids == want && *ids_special == want_special &&
        *decoded == e["decoded"].get<std::string>() &&
        *decoded_special == e["decoded_special"].get<std::string>() &&
        *decoded_skip == e["decoded_skip"].get<std::string>();
    if (!ok && ++failures <= 5) {
      ADD_FAILURE() << "text \"" << absl::CHexEscape(text) << "\"\n  ids "
                    << Show(*ids) << "\n want " << Show(want)
                    << "\n  with special " << Show(*ids_special) << "\n  want "
                    << Show(want_special) << "\n  decoded \""
                    << absl::CHexEscape(*decoded) << "\" want \""
                    << absl::CHexEscape(e["decoded"].get<std::string>())
                    << "\"\n  decoded with special \""
                    << absl::CHexEscape(*decoded_special) << "\" want \""
                    << absl::CHexEscape(e["decoded_special"].get<std::string>())
                    << "\"\n  skipping special \""
                    << absl::CHexEscape(*decoded_skip) << "\" want \""
                    << absl::CHexEscape(e["decoded_skip"].get<std::string>())
                    << "\"";
    }
  }
  EXPECT_EQ(failures, 0) << "of " << expected.size() << " texts";
}

INSTANTIATE_TEST_SUITE_P(Pipelines, HfReferenceTest,
                         ::testing::Values("gpt2", "roberta", "llama3", "qwen2",
                                           "llama2", "mistral", "gemma",
                                           "wordpiece_like", "misc"));

// Byte-level pipelines lose nothing: decode(encode(x)) == x.
TEST(HfRoundTripTest, ByteLevelPipelinesRoundTrip) {
  const Reference& ref = GetReference();
  ASSERT_TRUE(ref.problem.empty()) << ref.problem;
  for (const char* name : {"gpt2", "llama3", "qwen2"}) {
    auto tok = LoadHfTokenizer(ref.dir + "/" + name + "/tokenizer.json");
    ASSERT_TRUE(tok.ok()) << tok.status();
    const json expected =
        json::parse(ReadAll(ref.dir + "/" + name + "/expected.json"));
    for (const json& e : expected) {
      const std::string text = e["text"].get<std::string>();
      // Qwen2 normalizes to NFC first: compare with the NFC text, which
      // the reference's own decoding is.
      const std::string want =
          std::string(name) == "qwen2" ? e["decoded"].get<std::string>() : text;
      auto ids = (*tok)->Encode(text);
      ASSERT_TRUE(ids.ok());
      auto back = (*tok)->Decode(*ids);
      ASSERT_TRUE(back.ok());
      EXPECT_EQ(*back, want)
          << name << ": \"" << absl::CHexEscape(text) << "\"";
    }
  }
}

// ---------------------------------------------------------------------------
// Without the reference: loading rules and errors.

// A small byte-level tokenizer.json with `patch` merged into it.
std::string TinyJson(const json& patch = json::object()) {
  json j = {
      {"version", "1.0"},
      {"added_tokens", json::array({{{"id", 5},
                                     {"content", "<eos>"},
                                     {"special", true},
                                     {"normalized", false},
                                     {"single_word", false},
                                     {"lstrip", false},
                                     {"rstrip", false}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"vocab",
         {{"a", 0},
          {"b", 1},
          {"ab", 2},
          {"\xC4\xA0", 3},
          {"\xC4\xA0"
           "ab",
           4}}},
        {"merges", json::array({"a b", json::array({"\xC4\xA0", "ab"})})}}}};
  j.merge_patch(patch);
  return j.dump();
}

TEST(HfTokenizerTest, EncodesMergesAndAddedTokens) {
  auto tok = HfTokenizer::Parse(TinyJson(), "tiny.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("ab ab<eos>ba");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{2, 4, 5, 1, 0}));
  EXPECT_EQ(*(*tok)->Decode(*ids), "ab ab<eos>ba");
  EXPECT_EQ(*(*tok)->Decode(*ids, /*skip_special_tokens=*/true), "ab abba");
  EXPECT_EQ((*tok)->vocab_size(), 6);
  EXPECT_EQ((*tok)->TokenToId("<eos>"), 5);
  // Ids it does not define decode to nothing.
  EXPECT_EQ(*(*tok)->Decode({2, 99, -1}), "ab");
}

TEST(HfTokenizerTest, RefusesInvalidUtf8Text) {
  auto tok = HfTokenizer::Parse(TinyJson(), "tiny.json");
  ASSERT_TRUE(tok.ok());
  auto ids = (*tok)->Encode("a\xFF");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("byte 1"));
}

TEST(HfTokenizerTest, ErrorsNameFileFieldAndValue) {
  struct Case {
    json patch;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers", json::array({{{"type", "Punctuation"}}})}}}},
       "tiny.json: pre_tokenizer.pretokenizers[0].type: pre-tokenizer "
       "\"Punctuation\" is not supported"},
      {{{"normalizer", {{"type", "Precompiled"}}}},
       "normalizer.type: normalizer \"Precompiled\" is not supported"},
      {{{"decoder", {{"type", "WordPiece"}}}},
       "decoder.type: decoder \"WordPiece\" is not supported"},
      {{{"model", {{"type", "Unigram"}}}},
       "model.type: model \"Unigram\" is not supported"},
      {{{"model", {{"merges", json::array({"a c"})}}}},
       "model.merges[0]: \"a\" + \"c\" names a token the vocab lacks"},
      {{{"model", {{"vocab", {{"a", -3}}}}}}, "model.vocab[\"a\"]"},
      {{{"model", {{"dropout", 0.1}}}}, "BPE dropout is not supported"},
      {{{"model", {{"unk_token", "<unk>"}}}},
       "model.unk_token: \"<unk>\" is not in the vocab"},
      {{{"pre_tokenizer",
         {{"type", "Split"},
          {"pattern", {{"Regex", "(unclosed"}}},
          {"behavior", "Isolated"}}}},
       "pre_tokenizer.pattern.Regex: regular expression \"(unclosed\" does "
       "not compile"},
      {{{"pre_tokenizer",
         {{"type", "Split"},
          {"pattern", {{"String", "x"}}},
          {"behavior", "Sideways"}}}},
       "pre_tokenizer.behavior: unknown behavior \"Sideways\""},
      {{{"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "__"}}}},
       "pre_tokenizer.replacement: expected one character"},
      {{{"pre_tokenizer",
         {{"type", "Metaspace"},
          {"replacement", "_"},
          {"add_prefix_space", false},
          {"prepend_scheme", "always"}}}},
       "pre_tokenizer.add_prefix_space: false contradicts"},
      {{{"post_processor",
         {{"type", "TemplateProcessing"},
          {"single", json::array({{{"SpecialToken", {{"id", "<s>"}}}},
                                  {{"Sequence", {{"id", "A"}}}}})},
          {"special_tokens", json::object()}}}},
       "post_processor.single[0].SpecialToken.id: \"<s>\" is missing from "
       "special_tokens"},
      {{{"added_tokens", json::array({{{"content", "x"}}})}},
       "added_tokens[0].id: expected an id"},
  };
  for (const Case& c : cases) {
    auto tok = HfTokenizer::Parse(TinyJson(c.patch), "tiny.json");
    ASSERT_FALSE(tok.ok()) << c.patch.dump();
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(tok.status().message(), HasSubstr(c.message)) << c.patch.dump();
  }
  auto not_json = HfTokenizer::Parse("{\"model\": [", "broken.json");
  EXPECT_THAT(not_json.status().message(), HasSubstr("broken.json"));
}

// A model directory with tokenizer.json uses it (before tokenizer.model),
// and the post-processor decides whether prompts start with BOS.
TEST(HfTokenizerTest, ModelDirectoriesPreferTokenizerJson) {
  const std::string dir = testing::TempDir("hf_tokenizer_dir");
  json j = json::parse(TinyJson());
  j["added_tokens"].push_back({{"id", 6},
                               {"content", "<bos>"},
                               {"special", true},
                               {"normalized", false}});
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<bos>"}}}},
                              {{"Sequence", {{"id", "A"}}}}})},
      {"special_tokens",
       {{"<bos>", {{"id", "<bos>"}, {"ids", {6}}, {"tokens", {"<bos>"}}}}}}};
  std::ofstream(dir + "/tokenizer.json") << j.dump();
  std::ofstream(dir + "/tokenizer.model") << "not a sentencepiece model";
  ModelConfig config;
  config.bos_token_id = 6;
  config.eos_token_id = 5;
  auto tok = LoadTokenizer(dir, config);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_TRUE((*tok)->add_bos());
  EXPECT_EQ((*tok)->eos_id(), 5);
  auto prompt = (*tok)->EncodePrompt("ab");
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(*prompt, (std::vector<int32_t>{6, 2}));
}

// The fuzz seed uses nearly every supported component: it must load and
// run (it would otherwise seed the fuzzer with a parse error).
TEST(HfTokenizerTest, FuzzSeedLoadsAndRuns) {
  auto tok = LoadHfTokenizer(testing::SourceDir() +
                             "/fuzz/seeds/tokenizer_fuzz/hf_tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->EncodePrompt("Ab abc 12 tok x\u00e9 <s>");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->front(), 9);
  EXPECT_TRUE((*tok)->Decode(*ids).ok());
}

// Rust's find_iter: an empty match right after the previous match is
// skipped, one character on.
TEST(OnigPatternTest, EmptyMatchesFollowRustFindIter) {
  auto re = OnigPattern::Compile("a*");
  ASSERT_TRUE(re.ok());
  auto m = (*re)->FindAll("baab");
  ASSERT_TRUE(m.ok());
  using P = std::pair<size_t, size_t>;
  EXPECT_EQ(*m, (std::vector<P>{{0, 0}, {1, 3}, {4, 4}}));
  auto look = OnigPattern::Compile(R"(\s+(?!\S)|\s+)");
  ASSERT_TRUE(look.ok());
  EXPECT_EQ(*(*look)->FindAll("a   b"), (std::vector<P>{{1, 3}, {3, 4}}));
}

}  // namespace
}  // namespace edgesplit
