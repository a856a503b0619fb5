// SentencePiece BPE tokenizer (tokenizer.model), as Llama-family models ship,
// implemented here rather than through libsentencepiece: Debian's
// libsentencepiece exports its bundled copy of protobuf's symbols, which
// interpose on the libprotobuf that LibTorch and gRPC load and crash the
// process at start-up. libsentencepiece stays the reference in tests
// (sentencepiece_reference_test), which must give identical ids and text.
//
// Supported: model_type BPE, byte fallback, identity normalization (no
// precompiled charsmap), add_dummy_prefix, remove_extra_whitespaces,
// escape_whitespaces, user-defined symbols. Anything else (unigram models,
// NFKC charsmaps, whitespace-as-suffix) is rejected with a clear error.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tokenizer/tokenizer.h"

namespace edgesplit {

// Errors name `model_path`.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(
    const std::string& model_path);
// Same, from the serialized ModelProto bytes.
absl::StatusOr<std::unique_ptr<Tokenizer>> ParseSentencePieceTokenizer(
    absl::string_view model_proto, absl::string_view source);

// Trains a small SentencePiece BPE model (byte fallback, identity
// normalization, unk/bos/eos = 0/1/2) on `corpus` lines with at most
// `vocab_size` pieces, and writes it as `path` (tokenizer.model format,
// loadable by libsentencepiece and Hugging Face). For `model init`.
absl::Status WriteSentencePieceBpeModel(const std::vector<std::string>& corpus,
                                        int vocab_size,
                                        const std::string& path);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
