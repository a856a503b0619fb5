#include "runtime/tokenizer/spm_reference/sentencepiece_reference_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "base/file_util.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

namespace edgesplit {
namespace sptest {
namespace {

namespace fs = std::filesystem;
using spref::ReferenceProcessor;

std::string Escape(const std::string& s) {
  return absl::CHexEscape(s.substr(0, 200));
}

std::string IdsToString(const std::vector<int>& ids) {
  return absl::StrJoin(ids.begin(),
                       ids.begin() + std::min<size_t>(ids.size(), 60), ",");
}

// Strings meant to break things: whitespace runs, control and byte piece
// spellings, U+2581 itself, emoji, CJK, malformed UTF-8.
const std::vector<std::string>& Fragments() {
  static const auto* fragments = new std::vector<std::string>{
      "a",
      "b",
      "Z",
      "the",
      " ",
      "  ",
      "   ",
      "\t",
      "\n",
      "\r\n",
      "\xE2\x96\x81",
      "\xE2\x96\x81\xE2\x96\x81",
      "<s>",
      "</s>",
      "<unk>",
      "<0x41>",
      "<pad>",
      "\xC3\xA9",
      "\xC3\xB1",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",
      "\xE4\xB8\xAD\xE6\x96\x87",
      "\xED\x95\x9C",
      "\xF0\x9F\x98\x80",
      "\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",
      "\xF0\x9F",
      "\x80",
      "\xFF",
      "\xC3",
      "\xC0\x80",
      "\xED\xA0\x80",
      "\xF4\x90\x80\x80",
      "\xF8\x88\x80\x80\x80",
      "\xEF\xBF\xBD",
      std::string("\0", 1),
      "Once upon a time",
      "Lily",
      ",",
      ".",
      "!",
      "'",
      "\"",
      "123",
      "3.14",
      "\xC2\xA0",
      "\xE3\x80\x80",
      "\xE2\x80\x8B",
      "e\xCC\x81",
      "ab",
      "ll",
      "\xE2\x98\x83\xE2\x98\x83",
      "<mask>",
      "\t\t"};
  return *fragments;
}

}  // namespace

std::string SourceDir() {
  const char* env = std::getenv("EDGESPLIT_SOURCE_DIR");
  if (env != nullptr && *env != '\0') return env;
  return fs::current_path().string();
}

std::string SharedPath(const std::string& rel) {
  return SourceDir() + "/../shared/" + rel;
}

std::string RealModelPath() {
  return SharedPath("models/stories260K/tokenizer.model");
}

std::string ReadFile(const std::string& path) {
  auto bytes = edgesplit::ReadFile(path);
  if (!bytes.ok()) ADD_FAILURE() << bytes.status();
  return bytes.value_or("");
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) lines.push_back(line);
  return lines;
}

std::string TempDir() {
  const std::string dir =
      ::testing::TempDir() + "/sentencepiece_reference_test";
  fs::create_directories(dir);
  return dir;
}

Both LoadBoth(const std::string& bytes) {
  Both b;
  auto ours = ParseSentencePieceTokenizer(bytes, "test.model");
  EXPECT_TRUE(ours.ok()) << ours.status();
  if (ours.ok()) b.ours = std::move(*ours);
  std::string error;
  b.ref = ReferenceProcessor::LoadFromSerialized(bytes, &error);
  EXPECT_NE(b.ref, nullptr) << error;
  return b;
}

int CompareEncode(const Both& b, const std::vector<std::string>& texts,
                  const std::string& label, int* both_failed) {
  int mismatches = 0;
  for (const std::string& text : texts) {
    std::vector<int> expected;
    std::string error;
    const bool ref_ok = b.ref->Encode(text, &expected, &error);
    const auto ours = b.ours->Encode(text);
    bool same = ref_ok == ours.ok();
    if (same && ref_ok) {
      same = std::vector<int>(ours->begin(), ours->end()) == expected;
    }
    if (same && !ref_ok && both_failed != nullptr) ++*both_failed;
    if (!same && ++mismatches <= 5) {
      ADD_FAILURE() << label << ": encode differs on \"" << Escape(text)
                    << "\"\n  libsentencepiece: "
                    << (ref_ok ? IdsToString(expected) : error)
                    << "\n  ours:             "
                    << (ours.ok() ? IdsToString(std::vector<int>(ours->begin(),
                                                                 ours->end()))
                                  : ours.status().ToString());
    }
  }
  return mismatches;
}

int CompareDecode(const Both& b, const std::vector<std::vector<int>>& seqs,
                  const std::string& label) {
  int mismatches = 0;
  for (const std::vector<int>& ids : seqs) {
    std::string expected, error;
    const bool ref_ok = b.ref->Decode(ids, &expected, &error);
    const auto ours =
        b.ours->Decode(std::vector<int32_t>(ids.begin(), ids.end()));
    const bool same = ref_ok && ours.ok() && *ours == expected;
    if (!same && ++mismatches <= 5) {
      ADD_FAILURE() << label << ": decode differs on [" << IdsToString(ids)
                    << "]\n  libsentencepiece: \""
                    << (ref_ok ? Escape(expected) : error)
                    << "\"\n  ours:             \""
                    << (ours.ok() ? Escape(*ours) : ours.status().ToString())
                    << "\"";
    }
  }
  return mismatches;
}

std::vector<std::string> EdgeCases() {
  std::vector<std::string> cases = {
      "",
      " ",
      "  ",
      "   ",
      "a",
      " a",
      "a ",
      " a ",
      "a  b",
      "a   b  ",
      "\t",
      "\n",
      " \n ",
      "\ta\tb\t",
      "\xE2\x96\x81",
      "\xE2\x96\x81"
      "a",
      "a\xE2\x96\x81"
      "b",
      " \xE2\x96\x81 ",
      "<s>",
      "<s> hello </s>",
      "<unk>",
      "<0x00>",
      "\xF0\x9F\x98\x80",
      "\xF0\x9F\x98\x80\xF0\x9F\x98\x80 \xF0\x9F\x98\x80",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86\xE3\x82\xAD"
      "\xE3\x82\xB9\xE3\x83\x88",
      "\xE4\xB8\xAD\xE6\x96\x87 \xE6\x96\x87\xE6\x9C\xAC",
      "\x80\x81\x82",
      "\xFF\xFE",
      "caf\xC3",
      "\xC3(",
      "\xE2\x82",
      "\xED\xBF\xBF",
      "\xEF\xBF\xBD",
      std::string("hello\0world", 11),
      std::string(100, ' '),
      std::string(1000, 'a'),
      "Once upon a time, there was a little girl named "
      "Lily. She loved to play outside in the park.",
      "  leading and trailing  ",
      "x\n\ny",
      "\xC2\xA0nbsp\xC2\xA0"};
  std::mt19937 rng(12345);
  const auto& frags = Fragments();
  for (int i = 0; i < 3000; ++i) {
    std::string s;
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int j = 0; j < n; ++j) s += frags[rng() % frags.size()];
    cases.push_back(std::move(s));
  }
  return cases;
}

const std::string& RealModelBytes() {
  static const auto* bytes = new std::string(ReadFile(RealModelPath()));
  return *bytes;
}

std::vector<std::string> DataLines(const std::string& name, size_t limit) {
  std::vector<std::string> lines =
      SplitLines(ReadFile(SharedPath("data/" + name)));
  if (lines.size() > limit) lines.resize(limit);
  return lines;
}

// Texts that survive encode + decode: valid UTF-8 without leading
// whitespace (the decoder drops the dummy prefix, and with it any leading
// space) and without a literal U+2581 (which decodes as ' ').
bool RoundTrips(const std::string& s) {
  if (s.empty()) return true;
  if (s[0] == ' ' || absl::StrContains(s, "\xE2\x96\x81")) return false;
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80   ? 1
               : c < 0xC2 ? 0
               : c < 0xE0 ? 2
               : c < 0xF0 ? 3
               : c < 0xF5 ? 4
                          : 0;
    if (n == 0 || i + n > s.size()) return false;
    // Leave the finer checks (overlongs, surrogates) to the lenient filter
    // below: any malformed byte breaks the round trip anyway.
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    if ((c == 0xE0 && static_cast<unsigned char>(s[i + 1]) < 0xA0) ||
        (c == 0xED && static_cast<unsigned char>(s[i + 1]) >= 0xA0) ||
        (c == 0xF0 && static_cast<unsigned char>(s[i + 1]) < 0x90) ||
        (c == 0xF4 && static_cast<unsigned char>(s[i + 1]) >= 0x90)) {
      return false;
    }
    i += n;
  }
  return true;
}

// Id sequences that exercise the decoder: everything the real model has
// (control, unk, byte, text pieces) in random order, and hand-made ones
// around partial UTF-8 byte runs and the leading-space rule.
std::vector<std::vector<int>> DecodeCases(const Both& b, uint32_t seed,
                                          int random_count) {
  const int n = b.ref->PieceSize();
  absl::flat_hash_map<std::string, int> id_of;
  std::vector<int> byte_id(256, -1);
  for (int id = 0; id < n; ++id) {
    const std::string piece = b.ref->IdToPiece(id);
    id_of[piece] = id;
    if (piece.size() == 6 && absl::StartsWith(piece, "<0x")) {
      byte_id[std::stoi(piece.substr(3, 2), nullptr, 16)] = id;
    }
  }
  auto piece = [&](const std::string& p) {
    auto it = id_of.find(p);
    return it == id_of.end() ? 0 : it->second;
  };
  const int bos = piece("<s>"), eos = piece("</s>"), unk = piece("<unk>");
  const std::string sp = "\xE2\x96\x81";
  const int space = piece(sp), space_a = piece(sp + "a");
  std::vector<std::vector<int>> seqs;
  if (byte_id[0] >= 0) {
    auto B = [&](int v) { return byte_id[v]; };
    seqs = {{B(0xE2), B(0x96)},
            {B(0xE2), B(0x96), B(0x81)},
            {B(0xF0), B(0x9F), space_a},
            {B(0xF0), B(0x9F), B(0x98), B(0x80), space_a},
            {B('a'), space_a},
            {B(0x80)},
            {B(0xC3), B(0xA9)},
            {B(0xC3), bos, B(0xA9)},
            {space, B(0xE2), B(0x96), B(0x81), space_a},
            {B(0xE2), B(0x96), B(0x81), space_a},
            {B(0xEF), B(0xBF), B(0xBD), B(0xED), B(0xA0), B(0x80)},
            {B(0xC0), B(0x80), B(0xF4), B(0x90), B(0x80), B(0x80)},
            {B(' '), space_a}};
  }
  const std::vector<std::vector<int>> fixed = {{},
                                               {bos},
                                               {bos, eos},
                                               {bos, space_a},
                                               {space, space_a},
                                               {space, space, space_a, space},
                                               {unk, space_a},
                                               {space_a, unk, unk},
                                               {bos, unk, space_a},
                                               {eos, space, space_a}};
  seqs.insert(seqs.end(), fixed.begin(), fixed.end());
  std::mt19937 rng(seed);
  for (int i = 0; i < random_count; ++i) {
    std::vector<int> ids(rng() % 24);
    for (int& id : ids) {
      // Half the time a byte piece, so that runs of them are common.
      id = (rng() % 2 == 0 && byte_id[0] >= 0) ? byte_id[rng() % 256]
                                               : static_cast<int>(rng() % n);
    }
    seqs.push_back(std::move(ids));
  }
  return seqs;
}

}  // namespace sptest
}  // namespace edgesplit
