#include "controller/model_copies.h"

#include "delivery/model_pack.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

// A one-file copy whose part is `bytes`, uploaded to `state`'s blobs when
// `upload`.
v1::ModelCopy Copy(const std::string& state, const std::string& name,
                   const std::string& bytes, bool upload = true) {
  if (upload) {
    auto store = BlobStore::Open(state + "/blobs");
    EXPECT_TRUE(store.ok() && (*store)->Put(bytes).ok());
  }
  v1::ModelCopy c;
  c.set_model_id("m");
  c.set_name(name);
  v1::ModelFile* f = c.add_files();
  f->set_path("config.json");
  f->set_sha256(Sha256Hex(bytes));
  f->set_bytes(static_cast<int64_t>(bytes.size()));
  v1::BlobPart* p = f->add_parts();
  p->set_blob(Sha256Hex(bytes));
  p->set_bytes(static_cast<int64_t>(bytes.size()));
  return c;
}

TEST(ModelCopyRegistryTest, RegistersChecksAndKeepsCopies) {
  const std::string state = testing::TempDir("model_copies");
  auto r = ModelCopyRegistry::Open(state);
  ASSERT_TRUE(r.ok());
  const v1::ModelCopy q8 = Copy(state, "q8_0", "{\"a\": 1}");
  ASSERT_TRUE((*r)->Register(q8).ok());
  EXPECT_TRUE((*r)->Register(q8).ok());  // The same again.
  EXPECT_TRUE(
      absl::IsAlreadyExists((*r)->Register(Copy(state, "q8_0", "{\"a\": 2}"))));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      (*r)->Register(Copy(state, "missing", "never uploaded", false))));
  v1::ModelCopy lying = Copy(state, "lying", "abc");
  lying.mutable_files(0)->set_sha256(Sha256Hex("abd"));
  EXPECT_THAT((*r)->Register(lying).message(), HasSubstr("do not hash"));
  EXPECT_EQ((*r)->ModelsWithBlob(q8.files(0).parts(0).blob()),
            std::set<std::string>{"m"});
  EXPECT_TRUE((*r)->ModelsWithBlob(Sha256Hex("abc")).empty());

  r->reset();
  auto reopened = ModelCopyRegistry::Open(state);
  ASSERT_TRUE(reopened.ok());
  auto found = (*reopened)->Find("m", "q8_0");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->SerializeAsString(), q8.SerializeAsString());
  EXPECT_TRUE(absl::IsNotFound((*reopened)->Find("m", "lying").status()));
  auto off = ModelCopyRegistry::Open("");
  ASSERT_TRUE(off.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition((*off)->Register(q8)));
}

// Which servers hold a copy (they fetched it; peers fetch from them) is
// kept with the copies, so a restarted controller still knows.
TEST(ModelCopyRegistryTest, KeepsHoldersAcrossRestarts) {
  const std::string state = testing::TempDir("model_copy_holders");
  auto r = ModelCopyRegistry::Open(state);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Register(Copy(state, "fp32", "{}")).ok());
  ASSERT_TRUE((*r)->SetHolder("m", "fp32", "a", true).ok());
  ASSERT_TRUE((*r)->SetHolder("m", "fp32", "b", true).ok());
  ASSERT_TRUE((*r)->SetHolder("m", "fp32", "a", true).ok());  // Again.
  EXPECT_TRUE(absl::IsNotFound((*r)->SetHolder("m", "other", "a", true)));
  EXPECT_EQ((*r)->Holders("m", "fp32"), (std::vector<std::string>{"a", "b"}));
  r->reset();
  auto reopened = ModelCopyRegistry::Open(state);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->Holders("m", "fp32"),
            (std::vector<std::string>{"a", "b"}));
  // b evicted it.
  ASSERT_TRUE((*reopened)->SetHolder("m", "fp32", "b", false).ok());
  EXPECT_EQ((*reopened)->Holders("m", "fp32"), std::vector<std::string>{"a"});
  EXPECT_TRUE((*reopened)->Holders("m", "nothing").empty());
  // Registering another copy after a restart keeps the holders too.
  reopened->reset();
  auto again = ModelCopyRegistry::Open(state);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Holders("m", "fp32"), std::vector<std::string>{"a"});
  EXPECT_TRUE((*again)->Register(Copy(state, "second", "{\"x\": 1}")).ok());
  EXPECT_EQ((*again)->Holders("m", "fp32"), std::vector<std::string>{"a"});
}

}  // namespace
}  // namespace edgesplit
