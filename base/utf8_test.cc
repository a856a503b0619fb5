#include "base/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace edgesplit {
namespace {

TEST(Utf8Test, RoundTripsEveryScalarValue) {
  // Every code point but the surrogates encodes, decodes back, and is the
  // only thing consumed.
  for (char32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string s;
    utf8::Append(cp, &s);
    ASSERT_EQ(s.size(), cp < 0x80      ? 1u
                        : cp < 0x800   ? 2u
                        : cp < 0x10000 ? 3u
                                       : 4u);
    size_t pos = 0;
    char32_t back = 0;
    ASSERT_TRUE(utf8::Decode(s, &pos, &back)) << static_cast<uint32_t>(cp);
    ASSERT_EQ(back, cp);
    ASSERT_EQ(pos, s.size());
  }
}

TEST(Utf8Test, RejectsWhatTheWhatwgDecoderReplaces) {
  const std::string bad[] = {
      "\x80",                  // Lone continuation byte.
      "\xC0\xAF",              // Overlong '/'.
      "\xE0\x80\xAF",          // Overlong, 3 bytes.
      "\xF0\x80\x80\xAF",      // Overlong, 4 bytes.
      "\xED\xA0\x80",          // Surrogate U+D800.
      "\xF4\x90\x80\x80",      // U+110000.
      "\xF8\x88\x80\x80\x80",  // 5-byte form.
      "\xE2\x82",              // Truncated.
      "\xE2\x28\xA1",          // Bad continuation.
  };
  for (const std::string& s : bad) {
    size_t pos = 0;
    char32_t cp;
    EXPECT_FALSE(utf8::Decode(s, &pos, &cp)) << s;
    EXPECT_EQ(pos, 0u);
    EXPECT_EQ(utf8::FirstInvalid("ok " + s), 3u);
  }
  EXPECT_EQ(utf8::FirstInvalid("h\xC3\xA9llo \xE2\x82\xAC"),
            absl::string_view::npos);
  EXPECT_EQ(utf8::FirstInvalid(""), absl::string_view::npos);
}

}  // namespace
}  // namespace edgesplit
