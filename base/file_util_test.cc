#include "base/file_util.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace edgesplit {
namespace {

std::string TempDir(const std::string& name) {
  const char* t = std::getenv("TEST_TMPDIR");
  const std::string dir =
      std::string(t != nullptr ? t : "/tmp") + "/edgesplit_base_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(FileUtilTest, WritesAtomicallyAndReadsBack) {
  const std::string dir = TempDir("write");
  const std::string path = dir + "/f.bin";
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  const std::string binary("a\0b\xff", 4);
  const std::string big(100000, 'x');
  const absl::string_view pieces[] = {"head:", binary, big};
  ASSERT_TRUE(WriteFileAtomically(path, pieces).ok());
  auto back = ReadFile(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, "head:" + binary + big);
  // No temporary is left beside it.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST(FileUtilTest, ErrorsNameThePathAndLeaveTheOldFile) {
  const std::string dir = TempDir("errors");
  auto missing = ReadFile(dir + "/nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir + "/nope"), std::string::npos);
  // A directory cannot be read as a file.
  EXPECT_FALSE(ReadFile(dir).ok());
  // Writing into a missing directory fails and names the target.
  absl::Status s = WriteFileAtomically(dir + "/no/such/f", "x");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(dir + "/no/such/f"), std::string::npos);
  // Renaming over a directory fails: the directory stays, no temporary left.
  std::filesystem::create_directories(dir + "/d/inner");
  EXPECT_FALSE(WriteFileAtomically(dir + "/d", "x").ok());
  EXPECT_TRUE(std::filesystem::is_directory(dir + "/d"));
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

}  // namespace
}  // namespace edgesplit
