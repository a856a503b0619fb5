// The GGUF reader on malformed input: every corruption fails with an error
// naming the file and what is wrong, and nothing crashes (this binary also
// runs under ASan and UBSan in scripts/test.sh).
#include <random>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "gtest/gtest.h"
#include "runtime/gguf.h"
#include "runtime/gguf_model.h"
#include "testing/gguf_writer.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using testing::GgufWriter;

void WriteLlamaKeys(GgufWriter* w) {
  w->KvString("general.architecture", "llama");
  w->KvU32("llama.context_length", 64);
  w->KvU32("llama.embedding_length", 32);
  w->KvU32("llama.block_count", 1);
  w->KvU32("llama.feed_forward_length", 64);
  w->KvU32("llama.attention.head_count", 4);
}

// One good file, then one corruption at a time: each fails with an error
// naming the file and what is wrong, and nothing crashes (ASan runs this).
TEST(GgufParseTest, MalformedFilesFailWithClearErrors) {
  GgufWriter w;
  w.KvString("general.architecture", "llama");
  w.Tensor("token_embd.weight", {32, 4}, 0, std::string(32 * 4 * 4, '\0'));
  const std::string good = w.Build();
  ASSERT_TRUE(GgufFile::ParseBytes(good, "good.gguf").ok());
  auto expect_error = [](const std::string& bytes, const std::string& what) {
    auto f = GgufFile::ParseBytes(bytes, "bad.gguf");
    ASSERT_FALSE(f.ok()) << what;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_NE(f.status().message().find("bad.gguf"), std::string::npos);
    EXPECT_NE(f.status().message().find(what), std::string::npos)
        << f.status().message();
  };
  for (size_t n : {0, 3, 10, 30, 60, 100}) {
    expect_error(good.substr(0, n), "");
  }
  std::string s = good;
  s[0] = 'X';
  expect_error(s, "bad magic");
  s = good;
  s[4] = 9;
  expect_error(s, "version 9");
  // The tensor's type field: after the header, the key and the tensor name.
  const size_t type_at = good.find("token_embd.weight") + 17 + 4 + 16;
  s = good;
  s[type_at] = 13;  // Q5_K.
  expect_error(s, "ggml type 13");
  s = good;
  s[type_at + 4] = 1;  // Offset 1: misaligned.
  expect_error(s, "not aligned");
  s = good;
  s[type_at + 5] = 1;  // Offset 256: past the data.
  expect_error(s, "runs past the end");
  s = good;
  s[type_at - 16] = 33;  // Rows of 33 in a Q8_0 tensor would not divide...
  s[type_at] = 8;
  expect_error(s, "not a multiple of 32");
  s = good;
  s[good.find("token_embd.weight") + 17] = 5;  // Five dimensions.
  expect_error(s, "5 dimensions");
  // A string length past the end of the file.
  s = good;
  s[31] = 0x7F;  // The first key's length, high byte.
  expect_error(s, "runs past the end");
  // An array claiming more elements than the file holds.
  GgufWriter a;
  a.KvArray("x", 4, std::vector<uint32_t>{1, 2});
  s = a.Build();
  const size_t count_at = s.find('x') + 1 + 4 + 4;
  s[count_at + 7] = 0x10;
  expect_error(s, "more than the file holds");
}

// Random corruptions of a file with every kind of value: the parser
// returns (a status or a file) and never crashes or reads out of bounds.
TEST(GgufParseTest, RandomCorruptionsNeverCrash) {
  GgufWriter w;
  WriteLlamaKeys(&w);
  w.KvStrings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "abc"});
  w.KvArray("tokenizer.ggml.scores", 6, std::vector<float>{0, 0, 0, -1});
  w.KvBool("tokenizer.ggml.add_bos_token", true);
  w.Tensor("token_embd.weight", {32, 16}, 0, std::string(32 * 16 * 4, 0));
  w.Tensor("blk.0.attn_q.weight", {32, 32}, 8, std::string(32 * 34, 0));
  const std::string good = w.Build();
  ASSERT_TRUE(GgufFile::ParseBytes(good, "good.gguf").ok());
  std::mt19937 rng(7);
  int failures = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string s = good;
    const int flips = 1 + trial % 4;
    for (int k = 0; k < flips; ++k) {
      s[rng() % s.size()] = static_cast<char>(rng());
    }
    if (trial % 7 == 0) s.resize(rng() % s.size());
    failures += !GgufFile::ParseBytes(s, "fuzz.gguf").ok();
  }
  EXPECT_GT(failures, 0);
}

// Import-level errors name the key or the tensor.
TEST(GgufParseTest, ImportErrorsNameTheKeyOrTensor) {
  auto import_error = [](const GgufWriter& w, const std::string& name) {
    const std::string path = testing::TempDir(name) + ".gguf";
    EXPECT_TRUE(WriteFileAtomically(path, w.Build()).ok());
    auto m = ImportGguf(path);
    EXPECT_FALSE(m.ok());
    EXPECT_NE(m.status().message().find(path), std::string::npos);
    return std::string(m.status().message());
  };
  GgufWriter arch;
  arch.KvString("general.architecture", "gpt2");
  EXPECT_NE(import_error(arch, "arch").find("general.architecture"),
            std::string::npos);
  GgufWriter missing;
  missing.KvString("general.architecture", "llama");
  EXPECT_NE(import_error(missing, "missing").find("llama.embedding_length"),
            std::string::npos);
  GgufWriter typed;
  WriteLlamaKeys(&typed);
  typed.KvString("llama.attention.head_count_kv", "four");
  EXPECT_NE(import_error(typed, "typed").find("head_count_kv"),
            std::string::npos);
  GgufWriter extra;
  WriteLlamaKeys(&extra);
  extra.Tensor("token_embd.weight", {32, 16}, 0, std::string(32 * 16 * 4, 0));
  extra.Tensor("rope_freqs.weight", {4}, 0, std::string(16, '\0'));
  EXPECT_NE(import_error(extra, "extra").find("rope_freqs.weight"),
            std::string::npos);
  GgufWriter block;
  WriteLlamaKeys(&block);
  block.Tensor("token_embd.weight", {32, 16}, 0, std::string(32 * 16 * 4, 0));
  block.Tensor("blk.1.attn_q.weight", {32, 32}, 0, std::string(32 * 32 * 4, 0));
  EXPECT_NE(import_error(block, "block").find("blk.1.attn_q.weight"),
            std::string::npos);
}

// Tokenizer keys are checked like the rest.
TEST(GgufParseTest, TokenizerKeysAreValidated) {
  GgufWriter w;
  WriteLlamaKeys(&w);
  w.KvString("tokenizer.ggml.model", "llama");
  w.KvStrings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"});
  w.KvArray("tokenizer.ggml.token_type", 5, std::vector<int32_t>{2, 3, 3, 9});
  auto f = GgufFile::ParseBytes(w.Build(), "tok.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  auto tok = LoadGgufTokenizer(**f);
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("token_type[3]"), std::string::npos)
      << tok.status();
  GgufWriter g;
  g.KvString("tokenizer.ggml.model", "gpt2");
  auto f2 = GgufFile::ParseBytes(g.Build(), "tok2.gguf");
  ASSERT_TRUE(f2.ok());
  EXPECT_NE(LoadGgufTokenizer(**f2).status().message().find("\"gpt2\""),
            std::string::npos);
}

TEST(GgufParseTest, UnpermuteInvertsTheConvertersPermutation) {
  // 2 heads of 4 rows: GGUF rows (h, i, j) hold HF rows (h, j, i).
  const int64_t want[8] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int64_t r = 0; r < 8; ++r)
    EXPECT_EQ(UnpermuteRowIndex(r, 8, 2), want[r]);
}

}  // namespace
}  // namespace edgesplit
