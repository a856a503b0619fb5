#include "runtime/tokenizer/byte_level.h"

namespace edgesplit {

const ByteMap& GetByteMap() {
  static const ByteMap* const map = [] {
    auto* m = new ByteMap;
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
             (b >= 0xAE && b <= 0xFF);
    };
    int k = 0;
    for (int b = 0; b < 256; ++b) {
      if (printable(b)) {
        m->order[k++] = static_cast<uint8_t>(b);
        m->byte_to_cp[b] = static_cast<char32_t>(b);
      }
    }
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      if (!printable(b)) {
        m->order[k++] = static_cast<uint8_t>(b);
        m->byte_to_cp[b] = static_cast<char32_t>(0x100 + n++);
      }
    }
    m->cp_to_byte.fill(-1);
    for (int b = 0; b < 256; ++b) m->cp_to_byte[m->byte_to_cp[b]] = b;
    return m;
  }();
  return *map;
}

}  // namespace edgesplit
