// Test helpers for locating the source tree and ../shared (no LibTorch).
#ifndef EDGESPLIT_TESTING_TEST_PATHS_H_
#define EDGESPLIT_TESTING_TEST_PATHS_H_

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace edgesplit {
namespace testing {

// Root of the source tree (tests run from it; CTest also sets the variable).
inline std::string SourceDir() {
  const char* d = std::getenv("EDGESPLIT_SOURCE_DIR");
  return d != nullptr ? d : std::filesystem::current_path().string();
}

// ../shared beside the checkout, where the real model and data live.
inline std::string SharedDir() { return SourceDir() + "/../shared"; }

// A fresh, empty directory private to this test process.
inline std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path p = base != nullptr
                                ? std::filesystem::path(base)
                                : std::filesystem::temp_directory_path();
  p /= "edgesplit_test_" + std::to_string(::getpid()) + "_" + name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTING_TEST_PATHS_H_
