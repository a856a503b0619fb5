// Checks our SentencePiece BPE implementation (sentencepiece_tokenizer.h)
// id for id and byte for byte against libsentencepiece, which is linked into
// this test binary only (never next to libprotobuf), through the std-only
// wrapper sentencepiece_reference_lib.h. The trainer and malformed-model
// checks are in sentencepiece_reference_model_test.cc, same binary.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/sentencepiece_model.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"
#include "runtime/tokenizer/spm_reference/sentencepiece_reference_lib.h"
#include "runtime/tokenizer/spm_reference/sentencepiece_reference_util.h"
#include "runtime/tokenizer/tokenizer.h"

namespace edgesplit {
namespace sptest {
namespace {

using spref::ReferenceProcessor;

// ---------------------------------------------------------------------------
// The real model (stories260K, Llama-style BPE with byte fallback).

TEST(SentencePieceReferenceTest, RealModelLoads) {
  const Both b = LoadBoth(RealModelBytes());
  ASSERT_NE(b.ours, nullptr);
  ASSERT_NE(b.ref, nullptr);
  EXPECT_EQ(b.ours->vocab_size(), b.ref->PieceSize());
  EXPECT_EQ(b.ours->vocab_size(), 512);
  auto loaded = LoadSentencePieceTokenizer(RealModelPath());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto ids = (*loaded)->Encode("Once upon a time");
  ASSERT_TRUE(ids.ok());
  auto text = (*loaded)->Decode(*ids);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "Once upon a time");
  (*loaded)->set_special_tokens(1, 2, true);
  auto prompt = (*loaded)->EncodePrompt("Once upon a time");
  ASSERT_TRUE(prompt.ok());
  ASSERT_EQ(prompt->size(), ids->size() + 1);
  EXPECT_EQ((*prompt)[0], 1);
}

TEST(SentencePieceReferenceTest, EncodeMatchesOnEveryLineAndChunk) {
  const Both b = LoadBoth(RealModelBytes());
  ASSERT_NE(b.ours, nullptr);
  ASSERT_NE(b.ref, nullptr);
  for (const std::string name :
       {"tinystories_valid_sample.txt", "tinyshakespeare.txt"}) {
    const std::string text = ReadFile(SharedPath("data/" + name));
    ASSERT_FALSE(text.empty()) << name;
    const std::vector<std::string> lines = SplitLines(text);
    EXPECT_EQ(CompareEncode(b, lines, name + " lines"), 0);
    std::vector<std::string> chunks;
    for (size_t i = 0; i < lines.size(); i += 37) {
      std::string chunk;
      for (size_t j = i; j < std::min(lines.size(), i + 37); ++j) {
        absl::StrAppend(&chunk, lines[j], "\n");
      }
      chunks.push_back(std::move(chunk));
    }
    // Ragged byte windows too, cutting words and characters anywhere.
    for (size_t pos = 0; pos < text.size(); pos += 4099) {
      chunks.push_back(text.substr(pos, 3001));
    }
    chunks.push_back(text);
    EXPECT_EQ(CompareEncode(b, chunks, name + " chunks"), 0);
  }
}

TEST(SentencePieceReferenceTest, EncodeMatchesOnEdgeCases) {
  const Both b = LoadBoth(RealModelBytes());
  ASSERT_NE(b.ours, nullptr);
  ASSERT_NE(b.ref, nullptr);
  EXPECT_EQ(CompareEncode(b, EdgeCases(), "edge cases"), 0);
}
TEST(SentencePieceReferenceTest, DecodeMatches) {
  const Both b = LoadBoth(RealModelBytes());
  ASSERT_NE(b.ours, nullptr);
  ASSERT_NE(b.ref, nullptr);
  std::vector<std::vector<int>> seqs = DecodeCases(b, 777);
  std::vector<std::string> texts = EdgeCases();
  for (const std::string name :
       {"tinystories_valid_sample.txt", "tinyshakespeare.txt"}) {
    for (std::string& line : DataLines(name, 3000)) texts.push_back(line);
  }
  for (const std::string& text : texts) {
    std::vector<int> ids;
    std::string error;
    if (b.ref->Encode(text, &ids, &error)) seqs.push_back(std::move(ids));
  }
  EXPECT_EQ(CompareDecode(b, seqs, "real model"), 0);

  // Out-of-range ids decode to nothing: the same as leaving them out.
  auto with = b.ours->Decode({-5, 1, 600, 400, 1000000, 401});
  auto without = b.ours->Decode({1, 400, 401});
  ASSERT_TRUE(with.ok() && without.ok());
  EXPECT_EQ(*with, *without);

  // And text survives the round trip when nothing is lost to normalization.
  int checked = 0;
  for (const std::string& text : texts) {
    if (!RoundTrips(text)) continue;
    auto ids = b.ours->Encode(text);
    ASSERT_TRUE(ids.ok());
    auto back = b.ours->Decode(*ids);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, text);
    ++checked;
  }
  EXPECT_GT(checked, 3000);
}

TEST(SentencePieceReferenceTest, ConcurrentEncodeIsConsistent) {
  auto tok = ParseSentencePieceTokenizer(RealModelBytes(), "real");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<std::string> lines =
      DataLines("tinystories_valid_sample.txt", 2000);
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& line : lines)
    expected.push_back(*(*tok)->Encode(line));
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < lines.size() * 2; i += 3) {
        const size_t k = i % lines.size();
        auto ids = (*tok)->Encode(lines[k]);
        if (!ids.ok() || *ids != expected[k]) ++failures[t];
        if (!(*tok)->Decode(expected[k]).ok()) ++failures[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int f : failures) EXPECT_EQ(f, 0);
}

// ---------------------------------------------------------------------------
// Variants of the real model, written with our serializer: every normalizer
// switch, no byte fallback, user-defined and unused pieces, custom unk
// surfaces, tied scores, self-test data.

struct Variant {
  std::string name;
  std::function<void(spm::ModelProto&)> change;
};

std::vector<Variant> Variants() {
  using spm::PieceType;
  return {
      {"as_serialized", [](spm::ModelProto&) {}},
      {"remove_extra_whitespaces",
       [](spm::ModelProto& m) {
         m.normalizer_spec.remove_extra_whitespaces = true;
       }},
      {"no_dummy_prefix",
       [](spm::ModelProto& m) { m.normalizer_spec.add_dummy_prefix = false; }},
      {"no_dummy_prefix_remove_ws",
       [](spm::ModelProto& m) {
         m.normalizer_spec.add_dummy_prefix = false;
         m.normalizer_spec.remove_extra_whitespaces = true;
       }},
      {"no_escape_whitespaces",
       [](spm::ModelProto& m) {
         m.normalizer_spec.escape_whitespaces = false;
         m.normalizer_spec.remove_extra_whitespaces = true;
       }},
      {"no_byte_fallback",
       [](spm::ModelProto& m) {
         std::vector<spm::ModelPiece> kept;
         for (auto& p : m.pieces) {
           if (p.type != PieceType::kByte) kept.push_back(p);
         }
         m.pieces = kept;
         m.trainer_spec.byte_fallback = false;
       }},
      {"user_defined",
       [](spm::ModelProto& m) {
         for (const char* s : {"<mask>", "\xE2\x98\x83\xE2\x98\x83", "\t\t",
                               "\xE2\x96\x81<sep>", "x y", "Lily.", "Once upon",
                               "<s", "\xF0\x9F\x98\x80\xF0\x9F"}) {
           m.pieces.push_back({s, 0.0f, PieceType::kUserDefined});
         }
       }},
      {"unused_pieces",
       [](spm::ModelProto& m) {
         int k = 0;
         for (auto& p : m.pieces) {
           if (p.type == PieceType::kNormal && p.piece.size() > 2 &&
               ++k % 4 == 0) {
             p.type = PieceType::kUnused;
           }
         }
       }},
      {"unk_surface",
       [](spm::ModelProto& m) { m.trainer_spec.unk_surface = "[UNK]"; }},
      {"unk_surface_with_nul",
       [](spm::ModelProto& m) {
         m.trainer_spec.unk_surface = std::string("a\0b", 3);
       }},
      {"tied_scores",
       [](spm::ModelProto& m) {
         for (auto& p : m.pieces) p.score = 0.0f;
       }},
      {"reversed_scores",
       [](spm::ModelProto& m) {
         for (auto& p : m.pieces) p.score = -p.score;
       }},
      {"self_test_ok",
       [](spm::ModelProto& m) {
         m.self_test_samples.push_back({"Once upon a time",
                                        "\xE2\x96\x81Once \xE2\x96\x81upon "
                                        "\xE2\x96\x81"
                                        "a \xE2\x96\x81time"});
       }},
      {"control_shadows_normal",
       [](spm::ModelProto& m) {
         m.pieces.push_back({"e", 0.0f, PieceType::kControl});
       }},
  };
}

TEST(SentencePieceReferenceTest, ModelVariantsMatch) {
  auto base = spm::ParseModelProto(RealModelBytes(), "real");
  ASSERT_TRUE(base.ok()) << base.status();
  std::vector<std::string> texts = EdgeCases();
  for (std::string& line : DataLines("tinystories_valid_sample.txt", 300)) {
    texts.push_back(line);
  }
  for (const Variant& v : Variants()) {
    SCOPED_TRACE(v.name);
    spm::ModelProto model = *base;
    v.change(model);
    const std::string bytes = spm::SerializeModelProto(model);
    std::string error;
    auto ref = ReferenceProcessor::LoadFromSerialized(bytes, &error);
    auto ours = ParseSentencePieceTokenizer(bytes, v.name);
    // Every variant is a valid model for libsentencepiece.
    ASSERT_NE(ref, nullptr) << error;
    ASSERT_TRUE(ours.ok()) << ours.status();
    Both b{std::move(*ours), std::move(ref)};
    int both_failed = 0;
    EXPECT_EQ(CompareEncode(b, texts, v.name, &both_failed), 0);
    EXPECT_EQ(CompareDecode(b, DecodeCases(b, 99), v.name), 0);
    // Only a CONTROL piece spelled like text makes encoding fail (in both).
    if (v.name == "control_shadows_normal") {
      EXPECT_GT(both_failed, 100);
    } else {
      EXPECT_EQ(both_failed, 0);
    }
  }
}

// Small random vocabularies over a tiny alphabet, where merges collide all
// the time: tied scores (leftmost wins), UNUSED pieces that must be split
// back, user-defined pieces overlapping normal ones, every normalizer switch.
spm::ModelProto RandomSmallModel(std::mt19937& rng) {
  static const std::vector<std::string> kAlphabet = {
      "a", "b", "c", "\xE2\x96\x81", "\xC3\xA9", "\xF0\x9F\x98\x80", " "};
  using spm::PieceType;
  spm::ModelProto m;
  m.has_trainer_spec = true;
  m.trainer_spec.model_type = spm::kBpe;
  m.trainer_spec.byte_fallback = rng() % 2 == 0;
  m.normalizer_spec.add_dummy_prefix = rng() % 2 == 0;
  m.normalizer_spec.remove_extra_whitespaces = rng() % 2 == 0;
  m.normalizer_spec.escape_whitespaces = rng() % 4 != 0;
  m.pieces.push_back({"<unk>", 0.0f, PieceType::kUnknown});
  m.pieces.push_back({"<s>", 0.0f, PieceType::kControl});
  if (m.trainer_spec.byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      m.pieces.push_back({name, 0.0f, PieceType::kByte});
    }
  }
  std::set<std::string> seen;
  for (const std::string& c : kAlphabet) {
    if (rng() % 5 != 0 && seen.insert(c).second) {
      m.pieces.push_back({c, -10.0f, PieceType::kNormal});
    }
  }
  const int n = 5 + static_cast<int>(rng() % 40);
  for (int i = 0; i < n; ++i) {
    std::string piece;
    const int len = 2 + static_cast<int>(rng() % 4);
    for (int k = 0; k < len; ++k) piece += kAlphabet[rng() % kAlphabet.size()];
    if (!seen.insert(piece).second) continue;
    const int r = static_cast<int>(rng() % 20);
    const PieceType type = r < 13   ? PieceType::kNormal
                           : r < 17 ? PieceType::kUnused
                                    : PieceType::kUserDefined;
    m.pieces.push_back(
        {piece, -static_cast<float>(rng() % 4), type});  // many ties
  }
  return m;
}

TEST(SentencePieceReferenceTest, RandomSmallModelsMatch) {
  static const std::vector<std::string> kText = {
      "a", "b",  "c", "\xE2\x96\x81", "\xC3\xA9", "\xF0\x9F\x98\x80",
      " ", "  ", "d", "\xFF"};
  std::mt19937 rng(2024);
  int models = 0;
  for (int i = 0; i < 300; ++i) {
    const std::string bytes = spm::SerializeModelProto(RandomSmallModel(rng));
    std::string error;
    auto ref = ReferenceProcessor::LoadFromSerialized(bytes, &error);
    auto ours = ParseSentencePieceTokenizer(bytes, "random");
    ASSERT_EQ(ref != nullptr, ours.ok()) << error << " / " << ours.status();
    if (ref == nullptr) continue;
    ++models;
    Both b{std::move(*ours), std::move(ref)};
    std::vector<std::string> texts;
    for (int t = 0; t < 60; ++t) {
      std::string s;
      const int len = static_cast<int>(rng() % 16);
      for (int k = 0; k < len; ++k) s += kText[rng() % kText.size()];
      texts.push_back(std::move(s));
    }
    ASSERT_EQ(CompareEncode(b, texts, "random model " + std::to_string(i)), 0);
    ASSERT_EQ(CompareDecode(b, DecodeCases(b, i, 200), "random model"), 0);
  }
  EXPECT_GT(models, 250);
}

TEST(SentencePieceReferenceTest, FailingSelfTestIsRejected) {
  auto model = spm::ParseModelProto(RealModelBytes(), "real");
  ASSERT_TRUE(model.ok());
  model->self_test_samples.push_back({"Once upon a time", "wrong"});
  const std::string bytes = spm::SerializeModelProto(*model);
  std::string error;
  EXPECT_EQ(ReferenceProcessor::LoadFromSerialized(bytes, &error), nullptr);
  auto ours = ParseSentencePieceTokenizer(bytes, "selftest.model");
  EXPECT_EQ(ours.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(ours.status().message(), "selftest.model"));
}

// ---------------------------------------------------------------------------
// Throughput, ours against libsentencepiece (reported, not asserted).

TEST(SentencePieceReferenceTest, Throughput) {
  const Both b = LoadBoth(RealModelBytes());
  ASSERT_NE(b.ours, nullptr);
  ASSERT_NE(b.ref, nullptr);
  const std::string text =
      ReadFile(SharedPath("data/tinystories_valid_sample.txt"));
  const std::vector<std::string> lines = SplitLines(text);
  using Clock = std::chrono::steady_clock;
  auto mbps = [&](Clock::time_point start, double bytes) {
    const double s =
        std::chrono::duration<double>(Clock::now() - start).count();
    return bytes / 1e6 / s;
  };
  const double total = static_cast<double>(text.size());

  auto t = Clock::now();
  std::vector<int32_t> ours_ids;
  for (const std::string& line : lines) {
    auto ids = b.ours->Encode(line);
    ours_ids.insert(ours_ids.end(), ids->begin(), ids->end());
  }
  const double ours_lines = mbps(t, total);
  t = Clock::now();
  for (const std::string& line : lines) {
    std::vector<int> ids;
    std::string error;
    b.ref->Encode(line, &ids, &error);
  }
  const double ref_lines = mbps(t, total);
  t = Clock::now();
  auto whole = b.ours->Encode(text);
  const double ours_whole = mbps(t, total);
  t = Clock::now();
  std::vector<int> ref_whole;
  std::string error;
  b.ref->Encode(text, &ref_whole, &error);
  const double ref_whole_mbps = mbps(t, total);
  t = Clock::now();
  auto decoded = b.ours->Decode(ours_ids);
  const double ours_decode = mbps(t, total);
  t = Clock::now();
  std::string ref_decoded;
  b.ref->Decode(std::vector<int>(ours_ids.begin(), ours_ids.end()),
                &ref_decoded, &error);
  const double ref_decode = mbps(t, total);
  ASSERT_TRUE(whole.ok() && decoded.ok());
  std::printf(
      "[ speed    ] encode per line: ours %.1f MB/s, libsentencepiece %.1f "
      "MB/s\n[ speed    ] encode whole %.0f KB: ours %.1f MB/s, "
      "libsentencepiece %.1f MB/s\n[ speed    ] decode %zu ids: ours %.1f "
      "MB/s, libsentencepiece %.1f MB/s\n",
      ours_lines, ref_lines, total / 1e3, ours_whole, ref_whole_mbps,
      ours_ids.size(), ours_decode, ref_decode);
}

}  // namespace
}  // namespace sptest
}  // namespace edgesplit
