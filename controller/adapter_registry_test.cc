#include "controller/adapter_registry.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

v1::PutBlobRequest Chunk(const std::string& bytes, int64_t offset, int64_t n,
                         bool last) {
  v1::PutBlobRequest c;
  c.set_id(Sha256Hex(bytes));
  c.set_offset(offset);
  c.set_data(bytes.substr(offset, n));
  c.set_last(last);
  return c;
}

// Uploads both files of an adapter named `name` whose weights are `weights`.
v1::RegisteredAdapter Upload(AdapterRegistry& r, const std::string& name,
                             const std::string& weights) {
  v1::RegisteredAdapter a;
  a.set_model_id("real");
  a.set_name(name);
  const std::string config = R"({"peft_type":"LORA","r":4})";
  for (const auto& [file, bytes] :
       {std::pair<std::string, std::string>{"adapter_config.json", config},
        {"adapter_model.safetensors", weights}}) {
    auto put = r.PutBlob(Chunk(bytes, 0, bytes.size(), true));
    EXPECT_TRUE(put.ok() && put->stored()) << put.status();
    v1::AdapterFile* f = a.add_files();
    f->set_name(file);
    f->set_blob(Sha256Hex(bytes));
    f->set_bytes(static_cast<int64_t>(bytes.size()));
  }
  return a;
}

TEST(AdapterRegistryTest, UploadsResumeWhereTheControllerStands) {
  auto r = AdapterRegistry::Open(testing::TempDir("registry_resume"));
  ASSERT_TRUE(r.ok());
  const std::string bytes(3000, 'x');
  auto first = (*r)->PutBlob(Chunk(bytes, 0, 1000, false));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->received(), 1000);
  // A client that starts over (it lost track) is told where to continue,
  // and nothing is appended twice.
  auto again = (*r)->PutBlob(Chunk(bytes, 0, 1000, false));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->received(), 1000);
  EXPECT_FALSE(again->stored());
  auto rest = (*r)->PutBlob(Chunk(bytes, 1000, 2000, true));
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_TRUE(rest->stored());
  EXPECT_TRUE((*r)->store()->Has(Sha256Hex(bytes)));
  // A last chunk whose bytes do not hash to the id: refused, discarded.
  v1::PutBlobRequest bad = Chunk(bytes, 0, 3000, true);
  bad.set_id(Sha256Hex("other"));
  EXPECT_EQ((*r)->PutBlob(bad).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ((*r)->store()->PartialSize(Sha256Hex("other")), 0);
}

TEST(AdapterRegistryTest, NamesAreImmutableAndSurviveARestart) {
  const std::string dir = testing::TempDir("registry_names");
  {
    auto r = AdapterRegistry::Open(dir);
    ASSERT_TRUE(r.ok());
    const v1::RegisteredAdapter a = Upload(**r, "alpha", "weights-v1");
    ASSERT_TRUE((*r)->Register(a).ok());
    EXPECT_TRUE((*r)->Register(a).ok());  // The same files again.
    const v1::RegisteredAdapter v2 = Upload(**r, "alpha", "weights-v2");
    auto s = (*r)->Register(v2);
    EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
    EXPECT_THAT(s.message(), HasSubstr("new name"));
    v1::RegisteredAdapter beta = v2;
    beta.set_name("beta");
    ASSERT_TRUE((*r)->Register(beta).ok());
    ASSERT_TRUE((*r)->AddHolder("real", "alpha", "server-a").ok());
    EXPECT_EQ((*r)->AdaptersWithBlob(Sha256Hex("weights-v2")).size(), 1u);
    // Not uploaded, or not the two PEFT files: refused.
    v1::RegisteredAdapter missing = a;
    missing.set_name("gamma");
    missing.mutable_files(1)->set_blob(Sha256Hex("never sent"));
    EXPECT_EQ((*r)->Register(missing).code(),
              absl::StatusCode::kFailedPrecondition);
    missing.mutable_files()->RemoveLast();
    EXPECT_EQ((*r)->Register(missing).code(),
              absl::StatusCode::kInvalidArgument);
  }
  // Reopened: both adapters and the holder are back. With beta's weights
  // gone from disk, beta is left out (reported) and alpha still loads.
  std::filesystem::remove(dir + "/blobs/sha256/" + Sha256Hex("weights-v2"));
  auto r = AdapterRegistry::Open(dir);
  ASSERT_TRUE(r.ok()) << r.status();
  auto alpha = (*r)->Find("real", "alpha");
  ASSERT_TRUE(alpha.ok());
  EXPECT_THAT(alpha->holders(), ::testing::ElementsAre("server-a"));
  EXPECT_EQ((*r)->Find("real", "beta").status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_EQ((*r)->skipped().size(), 1u);
  EXPECT_THAT((*r)->skipped()[0], HasSubstr("beta"));
}

TEST(AdapterRegistryTest, WithoutAStateDirEverythingIsRefused) {
  auto r = AdapterRegistry::Open("");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE((*r)->enabled());
  EXPECT_EQ((*r)->Find("real", "alpha").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace edgesplit
