#include "delivery/adapter_files.h"

#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "delivery/publish_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

TEST(AdapterDirsTest, FetchedCopiesArePerModelAndWinOverPlacedOnes) {
  const std::string dir = testing::TempDir("adapter_dirs");
  auto fetched = FetchedAdaptersDir(dir, "model-a");
  ASSERT_TRUE(fetched.ok());
  EXPECT_EQ(*fetched, dir + "/.cluster/model-a");
  // Nothing yet.
  EXPECT_EQ(*FindAdapterDir(dir, "model-a", "x"), "");
  // The operator's copy, for every model.
  std::filesystem::create_directories(dir + "/x");
  EXPECT_EQ(*FindAdapterDir(dir, "model-a", "x"), dir + "/x");
  EXPECT_EQ(*FindAdapterDir(dir, "", "x"), dir + "/x");
  // A copy fetched for model-a is model-a's only.
  std::filesystem::create_directories(dir + "/.cluster/model-a/x");
  EXPECT_EQ(*FindAdapterDir(dir, "model-a", "x"), dir + "/.cluster/model-a/x");
  EXPECT_EQ(*FindAdapterDir(dir, "model-b", "x"), dir + "/x");
  std::filesystem::remove_all(dir + "/x");
  EXPECT_EQ(*FindAdapterDir(dir, "model-b", "x"), "");
  // Model ids become paths: never outside the directory.
  for (const char* bad : {"../up", ".hidden", "a/b", ""}) {
    auto s = FetchedAdaptersDir(dir, bad);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.status().message()),
                HasSubstr("cannot name an adapter directory"));
  }
  EXPECT_FALSE(FindAdapterDir(dir, "../up", "x").ok());
}

TEST(PublishDirectoryTest, SweepsStagingOfDeadWritersOnly) {
  namespace fs = std::filesystem;
  const std::string dir = testing::TempDir("publish_sweep");
  const std::string dead = dir + "/.t.partial.999999999.1";  // No such pid.
  const std::string live = absl::StrCat(dir, "/.t.partial.1.3");  // init.
  const std::string mine = absl::StrCat(dir, "/.t.partial.", getpid(), ".9");
  const std::string other = dir + "/.u.partial.999999999.1";  // Not t's.
  for (const std::string& d : {dead, live, mine, other}) {
    fs::create_directories(d);
  }
  ASSERT_TRUE(PublishDirectory(dir + "/t", [](const std::string& staging) {
                return WriteFileAtomically(staging + "/f", "x");
              }).ok());
  EXPECT_TRUE(fs::exists(dir + "/t/f"));
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(mine));
  EXPECT_TRUE(fs::exists(other));
}

}  // namespace
}  // namespace edgesplit
