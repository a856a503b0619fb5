#include "edge_server/adapter_disk.h"

#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

namespace fs = std::filesystem;

class FetchedAdapterDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::TempDir("adapter_disk");
    auto store = BlobStore::Open(root_ + "/.blobs");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  // Writes adapter `name` of model "m" with these file contents as a
  // fetched directory and its blobs; returns it as held.
  HeldAdapter Fetched(const std::string& name,
                      const std::vector<std::string>& files) {
    HeldAdapter a{"m", name, absl::StrCat(root_, "/.cluster/m/", name), {}};
    fs::create_directories(a.dir);
    for (size_t i = 0; i < files.size(); ++i) {
      std::ofstream(absl::StrCat(a.dir, "/f", i)) << files[i];
      auto id = store_->Put(files[i]);
      EXPECT_TRUE(id.ok());
      a.blobs[*id] = static_cast<int64_t>(files[i].size());
    }
    return a;
  }

  std::string root_;
  std::unique_ptr<BlobStore> store_;
};

TEST_F(FetchedAdapterDiskTest, EvictsTheLeastRecentlyUsedAndKeepsSharedBlobs) {
  FetchedAdapterDisk disk(store_.get(), 500);
  const std::string shared(100, 's');
  HeldAdapter a = Fetched("a", {shared, std::string(100, 'a')});
  HeldAdapter b = Fetched("b", {shared, std::string(100, 'b')});
  disk.Use(a);
  disk.Use(b);
  // Both directories (400), and the blobs, the shared one once (300).
  EXPECT_EQ(disk.bytes(), 700);
  disk.Use({"m", "a", a.dir, {}});  // a is used again: b is older now.
  std::vector<HeldAdapter> gone = disk.EvictOverBudget(a.dir);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].name, "b");
  EXPECT_EQ(disk.bytes(), 400);
  EXPECT_FALSE(fs::exists(b.dir));
  EXPECT_TRUE(fs::exists(a.dir));
  // b's own blob went; the one a still uses stayed.
  EXPECT_FALSE(store_->Has(Sha256Hex(std::string(100, 'b'))));
  EXPECT_TRUE(store_->Has(Sha256Hex(shared)));
  EXPECT_TRUE(store_->Has(Sha256Hex(std::string(100, 'a'))));
  EXPECT_FALSE(disk.Holds(b.dir));
}

TEST_F(FetchedAdapterDiskTest, NeverEvictsWhatItKeepsNorWithoutABudget) {
  HeldAdapter big = Fetched("big", {std::string(400, 'x')});
  FetchedAdapterDisk unlimited(store_.get(), 0);
  unlimited.Use(big);
  EXPECT_TRUE(unlimited.EvictOverBudget("").empty());
  FetchedAdapterDisk disk(store_.get(), 100);
  disk.Use(big);
  // Over the budget on its own, but just fetched for a session.
  EXPECT_TRUE(disk.EvictOverBudget(big.dir).empty());
  EXPECT_TRUE(fs::exists(big.dir));
  EXPECT_EQ(disk.EvictOverBudget("").size(), 1u);
  EXPECT_FALSE(fs::exists(big.dir));
}

TEST_F(FetchedAdapterDiskTest, ScanTakesInWhatAnEarlierRunFetched) {
  HeldAdapter a = Fetched("a", {std::string(60, 'a'), std::string(7, 'c')});
  HeldAdapter b = Fetched("b", {std::string(60, 'b')});
  // An operator's own adapter beside .cluster is not the disk's.
  fs::create_directories(root_ + "/mine");
  std::ofstream(root_ + "/mine/adapter_config.json") << "{}";
  // b was used an hour before a.
  const auto now = fs::file_time_type::clock::now();
  fs::last_write_time(a.dir, now);
  fs::last_write_time(b.dir, now - std::chrono::hours(1));
  FetchedAdapterDisk disk(store_.get(), 200);
  disk.Scan(root_ + "/");  // The same directories however spelled.
  EXPECT_TRUE(disk.Holds(a.dir));
  EXPECT_TRUE(disk.Holds(b.dir));
  EXPECT_EQ(disk.bytes(), 254);
  EXPECT_TRUE(disk.Holds(root_ + "//.cluster/m/a/"));
  std::vector<HeldAdapter> gone = disk.EvictOverBudget("");
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].name, "b");
  EXPECT_EQ(gone[0].model_id, "m");
  EXPECT_EQ(gone[0].blobs, b.blobs);  // Its blob ids, from its files.
  EXPECT_TRUE(disk.Holds(a.dir));
  EXPECT_TRUE(fs::exists(root_ + "/mine"));
}

}  // namespace
}  // namespace edgesplit
