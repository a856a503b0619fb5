#include "delivery/adapter_files.h"

#include <filesystem>

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

}  // namespace
}  // namespace edgesplit
