// Running commands from tests: quoting for /bin/sh.
#ifndef EDGESPLIT_TESTING_SHELL_H_
#define EDGESPLIT_TESTING_SHELL_H_

#include <string>

namespace edgesplit {
namespace testing {

// `s` as one /bin/sh word: single-quoted, embedded quotes escaped.
inline std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTING_SHELL_H_
