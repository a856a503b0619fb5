// GPT-2's bytes_to_unicode: byte-level BPE (GPT-2's files, and the
// ByteLevel components of Hugging Face tokenizer.json) spells every byte as
// a printable code point so vocab and merges files can be plain text.
// Printable Latin-1 bytes stand for themselves; the other 68 bytes take
// U+0100.. in byte order.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_BYTE_LEVEL_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_BYTE_LEVEL_H_

#include <array>
#include <cstdint>

namespace edgesplit {

struct ByteMap {
  // GPT-2's byte order: the printable bytes first, then the rest. Vocab ids
  // 0..255 of GPT-2 follow this order.
  std::array<uint8_t, 256> order;
  std::array<char32_t, 256> byte_to_cp;
  // Indexed by code point (< kCpLimit); -1 where no byte maps there.
  static constexpr char32_t kCpLimit = 0x100 + 68;
  std::array<int16_t, kCpLimit> cp_to_byte;
};

// The one map, built on first use; thread-safe.
const ByteMap& GetByteMap();

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_BYTE_LEVEL_H_
