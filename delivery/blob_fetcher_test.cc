#include "delivery/blob_fetcher.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

// A source holding one blob, which it can corrupt or stop serving.
class FakeSource : public BlobSource {
 public:
  FakeSource(std::string name, std::string id, std::string bytes)
      : name_(std::move(name)), id_(std::move(id)), bytes_(std::move(bytes)) {}
  std::string name() const override { return name_; }
  absl::StatusOr<std::string> Read(const std::string& id, int64_t offset,
                                   int64_t max_bytes, absl::Time,
                                   int64_t* total) override {
    if (id != id_) return absl::NotFoundError("not here");
    if (chunks_left_ == 0) return absl::UnavailableError("connection lost");
    if (chunks_left_ > 0) --chunks_left_;
    if (offset > static_cast<int64_t>(bytes_.size())) {
      return absl::OutOfRangeError("past the end");
    }
    *total = static_cast<int64_t>(bytes_.size());
    ++reads_;
    return bytes_.substr(offset, max_bytes);
  }
  void Corrupt(size_t at) { bytes_[at] ^= 1; }
  void FailAfter(int chunks) { chunks_left_ = chunks; }
  int reads() const { return reads_; }

 private:
  std::string name_, id_, bytes_;
  int chunks_left_ = -1;  // -1: never fails.
  int reads_ = 0;
};

std::string Bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131) % 251);
  return s;
}

TEST(BlobStoreTest, StoresByContentAndNoticesTampering) {
  auto store = BlobStore::Open(testing::TempDir("blobs_store"));
  ASSERT_TRUE(store.ok());
  const std::string bytes = Bytes(1000);
  auto id = (*store)->Put(bytes);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, Sha256Hex(bytes));
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE((*store)->Has(*id));
  EXPECT_EQ(*(*store)->Size(*id), 1000);
  EXPECT_EQ(*(*store)->Read(*id, 990, 100), bytes.substr(990));
  EXPECT_EQ((*store)->Read(*id, 1001, 1).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*store)->Size("../../etc/passwd").status().code(),
            absl::StatusCode::kInvalidArgument);
  std::ofstream((*store)->PathOf(*id), std::ios::binary) << "tampered";
  EXPECT_EQ((*store)->ReadVerified(*id).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_FALSE((*store)->Has(*id));  // Removed: a refetch can replace it.
}

class BlobFetcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = BlobStore::Open(testing::TempDir("blobs_fetch"));
    ASSERT_TRUE(store.ok());
    store_ = std::move(*store);
    bytes_ = Bytes(10000);
    id_ = Sha256Hex(bytes_);
  }
  FetchOptions Small() const {
    FetchOptions o;
    o.chunk_bytes = 1024;
    return o;
  }
  std::unique_ptr<BlobStore> store_;
  std::string bytes_, id_;
};

TEST_F(BlobFetcherTest, ACorruptedTransferIsRefusedAndRefetchedElsewhere) {
  FakeSource bad("peer-1", id_, bytes_), good("origin", id_, bytes_);
  bad.Corrupt(5000);
  BlobFetcher fetcher(store_.get(), Small());
  BlobSource* sources[] = {&bad, &good};
  auto r = fetcher.Fetch(id_, sources);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->source, "origin");
  ASSERT_EQ(r->failures.size(), 1u);
  EXPECT_THAT(r->failures[0], HasSubstr("peer-1"));
  EXPECT_THAT(r->failures[0], HasSubstr("discarded"));
  EXPECT_EQ(r->bytes_received, 2 * 10000);  // All again from the origin.
  EXPECT_EQ(*store_->ReadVerified(id_), bytes_);
  // Stored: a second fetch asks nobody.
  auto again = fetcher.Fetch(id_, sources);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->bytes_received, 0);
}

TEST_F(BlobFetcherTest, AnInterruptedDownloadResumesFromAnotherSource) {
  FakeSource flaky("peer-1", id_, bytes_), other("peer-2", id_, bytes_);
  flaky.FailAfter(3);  // 3 KiB, then the connection drops.
  BlobFetcher fetcher(store_.get(), Small());
  BlobSource* sources[] = {&flaky, &other};
  auto r = fetcher.Fetch(id_, sources);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->source, "peer-2");
  EXPECT_EQ(r->bytes_received, 10000);  // Nothing twice.
  EXPECT_EQ(other.reads(), 7);          // 10000 - 3072 bytes in 1 KiB chunks.
  EXPECT_EQ(*store_->ReadVerified(id_), bytes_);
}

TEST_F(BlobFetcherTest, ABadPartialFromOnePeerDoesNotFailTheNext) {
  // peer-1 sends a corrupted first 3 KiB and drops; peer-2 resumes from
  // there, the hash fails, and peer-2 is asked again from the start.
  FakeSource bad("peer-1", id_, bytes_), good("peer-2", id_, bytes_);
  bad.Corrupt(100);
  bad.FailAfter(3);
  BlobFetcher fetcher(store_.get(), Small());
  BlobSource* sources[] = {&bad, &good};
  auto r = fetcher.Fetch(id_, sources, 10000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->source, "peer-2");
  EXPECT_EQ(r->bytes_received, 3072 + (10000 - 3072) + 10000);
  EXPECT_EQ(*store_->ReadVerified(id_), bytes_);
}

TEST_F(BlobFetcherTest, TheExpectedSizeRefusesALiarAtOnce) {
  FakeSource liar("peer-1", id_, Bytes(20000)), good("origin", id_, bytes_);
  BlobFetcher fetcher(store_.get(), Small());
  BlobSource* sources[] = {&liar, &good};
  auto r = fetcher.Fetch(id_, sources, 10000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->source, "origin");
  EXPECT_EQ(liar.reads(), 1);           // One answer, then refused...
  EXPECT_EQ(r->bytes_received, 10000);  // ...and none of its bytes kept.
}

TEST_F(BlobFetcherTest, NoSourceOrBadIdsAreClearErrors) {
  FakeSource lost("peer-1", id_, bytes_);
  lost.FailAfter(0);
  BlobFetcher fetcher(store_.get(), Small());
  BlobSource* one[] = {&lost};
  auto r = fetcher.Fetch(id_, one);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("peer-1: connection lost"));
  EXPECT_EQ(fetcher.Fetch(id_, {}).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(fetcher.Fetch("nope", one).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A source that claims other bytes than the id names: refused.
  FakeSource liar("peer-2", id_, Bytes(10));
  BlobSource* lie[] = {&liar};
  r = fetcher.Fetch(id_, lie);
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(store_->Has(id_));
  EXPECT_EQ(store_->PartialSize(id_), 0);
}

}  // namespace
}  // namespace edgesplit
