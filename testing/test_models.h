// Test helpers: small random models written once per test binary.
#ifndef EDGESPLIT_TESTING_TEST_MODELS_H_
#define EDGESPLIT_TESTING_TEST_MODELS_H_

#include <cstdlib>
#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "gtest/gtest.h"
#include "runtime/model_init.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace testing {

// Writes (once per process) a tiny random model of `arch`; returns its dir.
// `preset` "mini" gives widths of 256 (for the K block formats).
inline const std::string& TinyModel(Arch arch, int64_t shard_bytes = 0,
                                    const std::string& preset = "tiny") {
  static std::map<std::tuple<Arch, int64_t, std::string>, std::string> dirs;
  auto key = std::make_tuple(arch, shard_bytes, preset);
  auto it = dirs.find(key);
  if (it != dirs.end()) return it->second;
  ModelInitOptions o;
  o.arch = arch;
  o.preset = preset;
  o.seed = 1234;
  o.max_shard_bytes = shard_bytes;
  o.out_dir = TempDir(std::string(ArchName(arch)) + "_" + preset + "_" +
                      std::to_string(shard_bytes));
  absl::Status s = InitModel(o);
  if (!s.ok()) {
    ADD_FAILURE() << s;
    std::abort();
  }
  return dirs[key] = o.out_dir;
}

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTING_TEST_MODELS_H_
