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

}  // namespace
}  // namespace edgesplit
