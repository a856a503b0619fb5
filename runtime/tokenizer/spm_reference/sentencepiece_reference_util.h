// Shared helpers of the sentencepiece_reference_test binary: data files,
// test strings, and side-by-side comparison of our SentencePiece tokenizer
// with libsentencepiece (through the std-only sentencepiece_reference_lib.h).
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_SPM_REFERENCE_SENTENCEPIECE_REFERENCE_UTIL_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_SPM_REFERENCE_SENTENCEPIECE_REFERENCE_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tokenizer/spm_reference/sentencepiece_reference_lib.h"
#include "runtime/tokenizer/tokenizer.h"

namespace edgesplit {
namespace sptest {

// Repository root: $EDGESPLIT_SOURCE_DIR, else the working directory.
std::string SourceDir();
// `rel` under ../shared relative to the repository root.
std::string SharedPath(const std::string& rel);
std::string RealModelPath();
// The real stories260K tokenizer.model, read once.
const std::string& RealModelBytes();
std::string ReadFile(const std::string& path);
std::vector<std::string> SplitLines(const std::string& text);
// The first `limit` lines of ../shared/data/`name`.
std::vector<std::string> DataLines(const std::string& name, size_t limit);
// A scratch directory for this test binary.
std::string TempDir();

// Our tokenizer and libsentencepiece loaded from the same serialized model.
struct Both {
  std::unique_ptr<Tokenizer> ours;
  std::unique_ptr<spref::ReferenceProcessor> ref;
};
// Loads both, failing the test (non-fatally) if either refuses.
Both LoadBoth(const std::string& bytes);

// Encodes every text with both; returns the number of disagreements (an
// error on one side only counts; an error on both is agreement) and reports
// the first few as test failures. `both_failed` counts the errors on both.
int CompareEncode(const Both& b, const std::vector<std::string>& texts,
                  const std::string& label, int* both_failed = nullptr);
// Decodes every id sequence (ids in range) with both; same reporting.
int CompareDecode(const Both& b, const std::vector<std::vector<int>>& seqs,
                  const std::string& label);

// Hand-picked edge cases (whitespace runs, control/byte piece spellings,
// U+2581, emoji, CJK, malformed UTF-8) plus 3000 seeded random mixes.
std::vector<std::string> EdgeCases();
// Id sequences for the decoder: random ones over the whole vocabulary (half
// byte pieces), and hand-made ones around partial UTF-8 byte runs, control
// pieces and the leading-space rule.
std::vector<std::vector<int>> DecodeCases(const Both& b, uint32_t seed,
                                          int random_count = 3000);
// Whether decode(encode(s)) == s is expected: valid UTF-8, no leading ' '
// (dropped with the dummy prefix) and no literal U+2581 (decodes as ' ').
bool RoundTrips(const std::string& s);

}  // namespace sptest
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_SPM_REFERENCE_SENTENCEPIECE_REFERENCE_UTIL_H_
