// WriteSentencePieceBpeModel checked against libsentencepiece, and
// malformed or unsupported tokenizer.model inputs (truncations, random and
// mutated bytes, wrong wire types, non-BPE models), which must give
// INVALID_ARGUMENT and never crash. Part of sentencepiece_reference_test.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "runtime/tokenizer/protobuf_wire.h"
#include "runtime/tokenizer/sentencepiece_model.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"
#include "runtime/tokenizer/spm_reference/sentencepiece_reference_lib.h"
#include "runtime/tokenizer/spm_reference/sentencepiece_reference_util.h"

namespace edgesplit {
namespace sptest {
namespace {

namespace fs = std::filesystem;
using spref::ReferenceProcessor;

// ---------------------------------------------------------------------------
// WriteSentencePieceBpeModel.

void CheckTrainedModel(const std::string& path, int vocab_size,
                       const std::vector<std::string>& texts) {
  const std::string bytes = ReadFile(path);
  ASSERT_FALSE(bytes.empty()) << path;
  auto model = spm::ParseModelProto(bytes, path);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_LE(model->pieces.size(), static_cast<size_t>(vocab_size));
  ASSERT_GE(model->pieces.size(), 260u);
  EXPECT_EQ(model->pieces[0].piece, "<unk>");
  EXPECT_EQ(model->pieces[0].type, spm::PieceType::kUnknown);
  EXPECT_EQ(model->pieces[1].piece, "<s>");
  EXPECT_EQ(model->pieces[1].type, spm::PieceType::kControl);
  EXPECT_EQ(model->pieces[2].piece, "</s>");
  EXPECT_EQ(model->pieces[2].type, spm::PieceType::kControl);
  EXPECT_EQ(model->pieces[3 + 0x41].piece, "<0x41>");
  EXPECT_EQ(model->pieces[3 + 0x41].type, spm::PieceType::kByte);
  EXPECT_EQ(model->trainer_spec.model_type, spm::kBpe);
  EXPECT_TRUE(model->trainer_spec.byte_fallback);
  EXPECT_EQ(model->trainer_spec.pad_id, -1);
  EXPECT_EQ(model->normalizer_spec.name, "identity");
  EXPECT_FALSE(model->normalizer_spec.remove_extra_whitespaces);
  for (size_t i = 260; i < model->pieces.size(); ++i) {
    EXPECT_LT(model->pieces[i].score, model->pieces[i - 1].score);
  }
  const Both b = LoadBoth(bytes);
  ASSERT_NE(b.ours, nullptr);
  ASSERT_NE(b.ref, nullptr);
  EXPECT_EQ(CompareEncode(b, texts, path), 0);
  EXPECT_EQ(CompareDecode(b, DecodeCases(b, 5), path), 0);
  for (const std::string& text : texts) {
    if (!RoundTrips(text)) continue;
    auto ids = b.ours->Encode(text);
    ASSERT_TRUE(ids.ok());
    auto back = b.ours->Decode(*ids);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, text);
  }
}

TEST(SentencePieceModelFileTest, TrainedModelsLoadInBothAndAgree) {
  std::vector<std::string> texts = EdgeCases();
  for (const std::string name :
       {"tinystories_valid_sample.txt", "tinyshakespeare.txt"}) {
    for (std::string& line : DataLines(name, 1500)) texts.push_back(line);
  }
  const std::vector<std::string> stories =
      DataLines("tinystories_valid_sample.txt", 4000);
  const std::string path = TempDir() + "/stories.model";
  ASSERT_TRUE(WriteSentencePieceBpeModel(stories, 1000, path).ok());
  CheckTrainedModel(path, 1000, texts);

  // Deterministic: the same corpus gives the same bytes.
  const std::string again = TempDir() + "/stories_again.model";
  ASSERT_TRUE(WriteSentencePieceBpeModel(stories, 1000, again).ok());
  EXPECT_EQ(ReadFile(path), ReadFile(again));

  // Odd corpora: reserved-looking text, malformed UTF-8, tabs, emoji.
  const std::vector<std::string> odd = {
      "<s> <s> <s></s><unk><0x41><0x41>",
      "\xFF\xFE broken \xC3 utf8",
      "tab\tseparated\tvalues",
      "\xF0\x9F\x98\x80\xF0\x9F\x98\x80 emoji",
      "  spaced   out  ",
      std::string(200, ' '),
      std::string(300, 'z'),
      "",
      std::string("nul\0inside\0\0 and \0\0\0", 20)};
  std::vector<std::string> odd_texts = texts;
  odd_texts.insert(odd_texts.end(), odd.begin(), odd.end());
  const std::string odd_path = TempDir() + "/odd.model";
  ASSERT_TRUE(WriteSentencePieceBpeModel(odd, 400, odd_path).ok());
  CheckTrainedModel(odd_path, 400, odd_texts);

  // The smallest vocabulary: reserved pieces, U+2581 and one character.
  const std::string tiny = TempDir() + "/tiny.model";
  ASSERT_TRUE(WriteSentencePieceBpeModel(stories, 261, tiny).ok());
  CheckTrainedModel(tiny, 261, texts);

  const std::string shakespeare = TempDir() + "/shakespeare.model";
  ASSERT_TRUE(WriteSentencePieceBpeModel(
                  DataLines("tinyshakespeare.txt", 40000), 2000, shakespeare)
                  .ok());
  CheckTrainedModel(shakespeare, 2000, texts);

  for (const auto& entry : fs::directory_iterator(TempDir())) {
    EXPECT_FALSE(absl::StrContains(entry.path().string(), ".tmp."))
        << entry.path();
  }
}

TEST(SentencePieceModelFileTest, TrainerRejectsBadArguments) {
  const absl::Status small =
      WriteSentencePieceBpeModel({"hello"}, 259, TempDir() + "/small.model");
  EXPECT_EQ(small.code(), absl::StatusCode::kInvalidArgument);
  const std::string missing = TempDir() + "/no/such/dir/x.model";
  const absl::Status bad_dir = WriteSentencePieceBpeModel({"hi"}, 300, missing);
  EXPECT_FALSE(bad_dir.ok());
  EXPECT_TRUE(absl::StrContains(bad_dir.message(), missing)) << bad_dir;
}

// ---------------------------------------------------------------------------
// Malformed and unsupported models: INVALID_ARGUMENT, never a crash.

void ExpectInvalid(const std::string& bytes, const std::string& what,
                   const std::string& message_part = "") {
  auto tok = ParseSentencePieceTokenizer(bytes, "bad.model");
  ASSERT_FALSE(tok.ok()) << what;
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument)
      << what << ": " << tok.status();
  EXPECT_TRUE(absl::StrContains(tok.status().message(), "bad.model"))
      << tok.status();
  if (!message_part.empty()) {
    EXPECT_TRUE(absl::StrContains(tok.status().message(), message_part))
        << what << ": " << tok.status();
  }
}

// Where ours accepts bytes, libsentencepiece must too and agree with it.
void ExpectAcceptedOnlyIfReferenceAgrees(const std::string& bytes,
                                         const std::vector<std::string>& texts,
                                         int* accepted) {
  auto ours = ParseSentencePieceTokenizer(bytes, "fuzz.model");
  if (!ours.ok()) {
    EXPECT_EQ(ours.status().code(), absl::StatusCode::kInvalidArgument)
        << ours.status();
    return;
  }
  ++*accepted;
  std::string error;
  auto ref = ReferenceProcessor::LoadFromSerialized(bytes, &error);
  ASSERT_NE(ref, nullptr) << "we accept what libsentencepiece rejects: "
                          << error;
  Both b{std::move(*ours), std::move(ref)};
  EXPECT_EQ(CompareEncode(b, texts, "fuzzed model"), 0);
}

TEST(SentencePieceModelFileTest, TruncatedModelsAreRejected) {
  const std::string& real = RealModelBytes();
  const std::vector<std::string> texts = {"Once upon a time", " hi  there\t"};
  int accepted = 0;
  for (size_t len = 0; len < real.size(); ++len) {
    ExpectAcceptedOnlyIfReferenceAgrees(real.substr(0, len), texts, &accepted);
  }
  // Only the cut right after trainer_spec (dropping normalizer_spec, so its
  // defaults apply) is still a well-formed, usable model.
  EXPECT_EQ(accepted, 1);
  ExpectInvalid("", "empty input");
  ExpectInvalid(real.substr(0, 100), "prefix", "at byte");
}

TEST(SentencePieceModelFileTest, RandomAndMutatedBytesNeverCrash) {
  std::mt19937 rng(4242);
  for (int i = 0; i < 3000; ++i) {
    std::string bytes(rng() % 300, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    auto tok = ParseSentencePieceTokenizer(bytes, "random.model");
    ASSERT_FALSE(tok.ok());
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  }
  const std::string& real = RealModelBytes();
  const std::vector<std::string> texts = {"Once upon a time", "ab\xC3 <s>"};
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bytes = real;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % bytes.size();
      if (rng() % 2 == 0) {
        bytes[pos] = static_cast<char>(bytes[pos] ^ (1 << (rng() % 8)));
      } else {
        bytes[pos] = static_cast<char>(rng());
      }
    }
    ExpectAcceptedOnlyIfReferenceAgrees(bytes, texts, &accepted);
  }
  std::cout << "[ fuzz     ] " << accepted
            << " of 3000 mutated models still load (and match)\n";
}

std::string WithField(std::function<void(pbwire::WireWriter&)> add) {
  pbwire::WireWriter w;
  add(w);
  return RealModelBytes() + w.data();
}

std::string WithTrainerField(std::function<void(pbwire::WireWriter&)> add) {
  pbwire::WireWriter inner;
  inner.WriteInt32Field(3, spm::kBpe);
  add(inner);
  pbwire::WireWriter w;
  w.WriteBytesField(2, inner.data());
  return RealModelBytes() + w.data();
}

TEST(SentencePieceModelFileTest, WrongWireTypesAreRejected) {
  using pbwire::WireType;
  using pbwire::WireWriter;
  ExpectInvalid(WithField([](WireWriter& w) { w.WriteVarintField(1, 7); }),
                "pieces as varint", "wire type");
  ExpectInvalid(WithField([](WireWriter& w) { w.WriteFixed32Field(2, 7); }),
                "trainer_spec as fixed32", "wire type");
  ExpectInvalid(WithField([](WireWriter& w) {
                  WireWriter piece;
                  piece.WriteBytesField(1, "zzz");
                  piece.WriteVarintField(2, 1);
                  w.WriteBytesField(1, piece.data());
                }),
                "score as varint", "wire type");
  ExpectInvalid(
      WithTrainerField([](WireWriter& w) { w.WriteBytesField(3, "BPE"); }),
      "model_type as bytes", "wire type");
  ExpectInvalid(WithField([](WireWriter& w) {
                  WireWriter norm;
                  norm.WriteTag(3, WireType::kFixed64);
                  for (int i = 0; i < 8; ++i) norm.WriteVarint(0);
                  w.WriteBytesField(3, norm.data());
                }),
                "add_dummy_prefix as fixed64", "wire type");
  ExpectInvalid(WithField([](WireWriter& w) {
                  WireWriter piece;
                  piece.WriteBytesField(1, "zzz");
                  piece.WriteVarintField(3, 9);
                  w.WriteBytesField(1, piece.data());
                }),
                "undefined piece type", "piece type");
  // Malformed framing.
  ExpectInvalid(WithField([](WireWriter& w) { w.WriteVarint(0); }),
                "field number 0");
  ExpectInvalid(WithField([](WireWriter& w) { w.WriteVarint((9 << 3) | 7); }),
                "wire type 7");
  ExpectInvalid(RealModelBytes() + "\x48" + std::string(10, '\x81') + "\x01",
                "11-byte varint", "varint");
  ExpectInvalid(RealModelBytes() + "\x48" + std::string(9, '\xff') + "\x02",
                "varint over 64 bits", "64 bits");
  ExpectInvalid(RealModelBytes() + "\x48\xff", "truncated varint",
                "truncated varint");
  ExpectInvalid(WithField([](WireWriter& w) {
                  w.WriteTag(9, WireType::kLengthDelimited);
                  w.WriteVarint(~0ull >> 1);
                }),
                "huge length");
  ExpectInvalid(
      WithField([](WireWriter& w) { w.WriteTag(9, WireType::kEndGroup); }),
      "stray end-group");
  ExpectInvalid(WithField([](WireWriter& w) {
                  w.WriteTag(9, WireType::kStartGroup);
                  w.WriteTag(10, WireType::kEndGroup);
                }),
                "mismatched end-group");
  ExpectInvalid(WithField([](WireWriter& w) {
                  for (int i = 0; i < 100000; ++i) {
                    w.WriteTag(9, WireType::kStartGroup);
                  }
                }),
                "deeply nested groups");
}

TEST(SentencePieceModelFileTest, UnknownFieldsOfEveryWireTypeAreSkipped) {
  using pbwire::WireType;
  using pbwire::WireWriter;
  auto add_unknowns = [](WireWriter& w) {
    w.WriteVarintField(100, 123456789);
    w.WriteTag(101, WireType::kFixed64);
    for (int i = 0; i < 8; ++i) w.WriteVarint(0x7f);
    w.WriteBytesField(102, "unknown payload");
    w.WriteFixed32Field(103, 0xdeadbeef);
    w.WriteTag(104, WireType::kStartGroup);
    w.WriteVarintField(1, 5);
    w.WriteTag(105, WireType::kStartGroup);
    w.WriteBytesField(2, "nested");
    w.WriteTag(105, WireType::kEndGroup);
    w.WriteTag(104, WireType::kEndGroup);
  };
  const std::vector<std::string> inputs = {WithField(add_unknowns),
                                           WithTrainerField(add_unknowns),
                                           WithField([&](WireWriter& w) {
                                             WireWriter piece;
                                             piece.WriteBytesField(1, "zzzq");
                                             piece.WriteFloatField(2, -1.0f);
                                             add_unknowns(piece);
                                             w.WriteBytesField(1, piece.data());
                                           })};
  const std::vector<std::string> texts = EdgeCases();
  for (const std::string& bytes : inputs) {
    int accepted = 0;
    ExpectAcceptedOnlyIfReferenceAgrees(bytes, texts, &accepted);
    EXPECT_EQ(accepted, 1);
  }
}

TEST(SentencePieceModelFileTest, UnsupportedModelsAreRejected) {
  auto base = spm::ParseModelProto(RealModelBytes(), "real");
  ASSERT_TRUE(base.ok());
  auto with = [&](std::function<void(spm::ModelProto&)> change) {
    spm::ModelProto m = *base;
    change(m);
    return spm::SerializeModelProto(m);
  };
  ExpectInvalid(with([](spm::ModelProto& m) {
                  m.trainer_spec.model_type = spm::kUnigram;
                }),
                "unigram", "UNIGRAM");
  ExpectInvalid(
      with([](spm::ModelProto& m) { m.trainer_spec.model_type = spm::kWord; }),
      "word", "BPE");
  ExpectInvalid(with([](spm::ModelProto& m) {
                  m.trainer_spec.treat_whitespace_as_suffix = true;
                }),
                "suffix", "treat_whitespace_as_suffix");
  ExpectInvalid(with([](spm::ModelProto& m) {
                  m.normalizer_spec.name = "nmt_nfkc";
                  m.normalizer_spec.precompiled_charsmap = "\x04\x00\x00\x00xx";
                }),
                "charsmap", "charsmap");
  ExpectInvalid(with([](spm::ModelProto& m) {
                  m.pieces[5].type = spm::PieceType::kNormal;
                }),
                "missing byte piece", "<0x02>");
  ExpectInvalid(with([](spm::ModelProto& m) {
                  m.pieces[400].piece = m.pieces[401].piece;
                }),
                "duplicate piece", "twice");
  ExpectInvalid(with([](spm::ModelProto& m) {
                  m.pieces[0].type = spm::PieceType::kNormal;
                }),
                "no unk", "UNKNOWN");
  ExpectInvalid(with([](spm::ModelProto& m) { m.pieces[300].piece.clear(); }),
                "empty piece", "empty");
  // A model without trainer_spec is UNIGRAM by proto default.
  pbwire::WireWriter only_pieces;
  only_pieces.WriteBytesField(1, "\x0a\x05<unk>\x18\x02");
  ExpectInvalid(only_pieces.data(), "no trainer_spec", "UNIGRAM");

  auto missing = LoadSentencePieceTokenizer(TempDir() + "/missing.model");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "missing.model"));
}

}  // namespace
}  // namespace sptest
}  // namespace edgesplit
