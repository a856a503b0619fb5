// libFuzzer target for tokenizer files: each input as a SentencePiece
// model (tokenizer.model), as a Hugging Face tokenizer.json and, split at
// its first NUL, as a GPT-2 BPE vocab.json + merges.txt (scripts/fuzz.sh
// builds and runs it; seeds in fuzz/seeds/tokenizer_fuzz and the real
// model's tokenizer.model). A tokenizer that loads must encode and decode
// text without crashing, and only to ids it defines.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "runtime/tokenizer/gpt2_bpe_tokenizer.h"
#include "runtime/tokenizer/hf_tokenizer.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

namespace {

void Exercise(const edgesplit::Tokenizer& t) {
  for (absl::string_view text :
       {absl::string_view("Once upon a time, hello  world!"),
        absl::string_view("\xff\xfe caf\xc3\xa9 \xe2\x80\x94 12345"),
        absl::string_view("")}) {
    for (bool prompt : {false, true}) {
      auto ids = prompt ? t.EncodePrompt(text) : t.Encode(text);
      if (!ids.ok()) continue;
      for (int32_t id : *ids) {
        // Post-processors may name any id (the file says which); the
        // model and its added tokens only their own.
        if (!prompt && (id < 0 || id >= t.vocab_size())) std::abort();
      }
      (void)t.Decode(*ids);
    }
  }
  (void)t.Decode({0, 1, 2, -1, t.vocab_size(), 1 << 30});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (auto spm = edgesplit::ParseSentencePieceTokenizer(bytes, "fuzz.model");
      spm.ok()) {
    Exercise(**spm);
  }
  if (auto hf = edgesplit::HfTokenizer::Parse(bytes, "tokenizer.json");
      hf.ok()) {
    Exercise(**hf);
  }
  const size_t nul = bytes.find('\0');
  if (nul != absl::string_view::npos) {
    auto bpe =
        edgesplit::ParseGpt2BpeTokenizer(bytes.substr(0, nul), "vocab.json",
                                         bytes.substr(nul + 1), "merges.txt");
    if (bpe.ok()) Exercise(**bpe);
  }
  return 0;
}
