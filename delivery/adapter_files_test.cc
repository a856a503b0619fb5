#include "delivery/adapter_files.h"

#include <unistd.h>

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "delivery/publish_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

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
  // Model ids become paths: never outside the directory, and other ids
  // (org/model) by their hash, each its own.
  std::set<std::string> seen;
  for (const char* id : {"../up", ".hidden", "a/b", "org/model"}) {
    auto d = FetchedAdaptersDir(dir, id);
    ASSERT_TRUE(d.ok()) << id;
    EXPECT_EQ(d->rfind(dir + "/.cluster/%", 0), 0u) << *d;
    EXPECT_EQ(d->find('/', dir.size() + 10), std::string::npos) << *d;
    EXPECT_TRUE(seen.insert(*d).second);
  }
  EXPECT_FALSE(FetchedAdaptersDir(dir, "").ok());
  // The operator's copy still serves such a model.
  std::filesystem::create_directories(dir + "/y");
  EXPECT_EQ(*FindAdapterDir(dir, "org/model", "y"), dir + "/y");
}

TEST(PublishDirectoryTest, SweepsStagingOfDeadWritersOnly) {
  namespace fs = std::filesystem;
  const std::string dir = testing::TempDir("publish_sweep");
  const std::string dead = dir + "/.t.partial.999999999.1";  // No such pid.
  const std::string live = absl::StrCat(dir, "/.t.partial.1.3");  // init.
  const std::string mine = absl::StrCat(dir, "/.t.partial.", getpid(), ".9");
  const std::string other = dir + "/.u.partial.999999999.1";  // Not t's.
  // Target "t.partial.9"'s staging, not "t"'s.
  const std::string longer = dir + "/.t.partial.9.partial.999999999.1";
  for (const std::string& d : {dead, live, mine, other, longer}) {
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
  EXPECT_TRUE(fs::exists(longer));
}

}  // namespace
}  // namespace edgesplit
