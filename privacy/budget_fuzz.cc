// libFuzzer target for the privacy budget file a device reads at start
// (privacy/budget.h): any bytes must give a budget or a clear error, never
// a crash (ASan, UBSan) or an escaping exception.
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>

#include "privacy/budget.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (64 << 10)) return 0;
  try {
    auto f = edgesplit::privacy::ParseBudgetFile(
        std::string(reinterpret_cast<const char*>(data), size), "/b.json");
    if (f.ok()) {
      // What a parsed file feeds: the conversion to (epsilon, delta).
      (void)edgesplit::privacy::EpsilonFromRdp(f->orders, f->rdp, 1e-5);
    }
  } catch (const std::exception&) {
    std::abort();
  }
  return 0;
}
