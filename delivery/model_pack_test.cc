#include "delivery/model_pack.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

// Serves parts from memory; `corrupt` ids come back with a flipped byte.
class MapSource : public BlobSource {
 public:
  std::string name() const override { return "map"; }
  absl::StatusOr<std::string> Read(const std::string& id, int64_t offset,
                                   int64_t max_bytes, absl::Time,
                                   int64_t* total) override {
    auto it = blobs.find(id);
    if (it == blobs.end()) return absl::NotFoundError("not here");
    std::string bytes(it->second);
    if (corrupt.count(id) > 0) bytes[0] ^= 1;
    *total = static_cast<int64_t>(bytes.size());
    return bytes.substr(offset, max_bytes);
  }
  std::map<std::string, std::string> blobs;
  std::set<std::string> corrupt;
};

// A safetensors file of two f32 tensors, a = {a0, a1} and b = {b0}.
std::string Safetensors(float a0, float a1, float b0) {
  std::string json =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  while (json.size() % 8 != 0) json += ' ';
  const uint64_t n = json.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  out += json;
  for (float v : {a0, a1, b0}) {
    out.append(reinterpret_cast<const char*>(&v), 4);
  }
  return out;
}

void WriteModel(const std::string& dir, float b0) {
  std::filesystem::create_directories(dir + "/tokenizer");
  std::filesystem::create_directories(dir + "/.cache");
  ASSERT_TRUE(WriteFileAtomically(dir + "/config.json", "{}").ok());
  ASSERT_TRUE(
      WriteFileAtomically(dir + "/model.safetensors", Safetensors(1, 2, b0))
          .ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/tokenizer/vocab.txt", "a\nb\n").ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/.cache/x", "skipped").ok());
}

TEST(ModelPackTest, SafetensorsSplitIntoHeaderAndTensorsThatRebuildIt) {
  const std::string bytes = Safetensors(1, 2, 3);
  auto parts = SplitModelFile("m/model.safetensors", bytes);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[1].size(), 8u);
  EXPECT_EQ(parts[2].size(), 4u);
  std::string joined;
  for (absl::string_view p : parts) joined += std::string(p);
  EXPECT_EQ(joined, bytes);
  // Not safetensors, or not parsable: one part.
  EXPECT_EQ(SplitModelFile("config.json", bytes).size(), 1u);
  EXPECT_EQ(SplitModelFile("x.safetensors", bytes.substr(0, 20)).size(), 1u);
  EXPECT_EQ(SplitModelFile("x.safetensors", "").size(), 1u);
}

TEST(ModelPackTest, ACopySharingTensorsFetchesOnlyWhatChanged) {
  const std::string dir = testing::TempDir("model_pack");
  WriteModel(dir + "/base", 3);
  WriteModel(dir + "/tuned", 4);  // Only tensor b differs.
  auto base = PackModelDir(dir + "/base", "m", "base");
  auto tuned = PackModelDir(dir + "/tuned", "m", "tuned");
  ASSERT_TRUE(base.ok() && tuned.ok()) << base.status() << tuned.status();
  ASSERT_EQ(base->copy.files_size(), 3);  // The hidden directory is not.
  EXPECT_EQ(base->copy.files(1).path(), "model.safetensors");
  EXPECT_EQ(base->copy.files(2).path(), "tokenizer/vocab.txt");
  MapSource source;
  for (const PackedModel* p : {&*base, &*tuned}) {
    for (const auto& [id, bytes] : p->parts)
      source.blobs[id] = std::string(bytes);
  }
  auto store = BlobStore::Open(dir + "/store");
  ASSERT_TRUE(store.ok());
  BlobFetcher fetcher(store->get());
  BlobSource* sources[] = {&source};
  ModelFetchStats first;
  ASSERT_TRUE(MaterializeModelCopy(base->copy, sources, fetcher, **store,
                                   dir + "/out/base", &first)
                  .ok());
  EXPECT_EQ(first.parts_fetched, 5);  // config, header, a, b, vocab.
  ModelFetchStats second;
  ASSERT_TRUE(MaterializeModelCopy(tuned->copy, sources, fetcher, **store,
                                   dir + "/out/tuned", &second)
                  .ok());
  EXPECT_EQ(second.parts_fetched, 1);
  EXPECT_EQ(second.bytes_received, 4);  // b's new value, nothing else.
  EXPECT_EQ(second.parts_held, 4);
  for (const char* copy : {"base", "tuned"}) {
    for (const char* file :
         {"config.json", "model.safetensors", "tokenizer/vocab.txt"}) {
      auto want = ReadFile(absl::StrCat(dir, "/", copy, "/", file));
      auto got = ReadFile(absl::StrCat(dir, "/out/", copy, "/", file));
      ASSERT_TRUE(want.ok() && got.ok()) << copy << file;
      EXPECT_TRUE(*want == *got) << copy << " " << file;
    }
  }
  // An existing directory is never overwritten.
  ModelFetchStats again;
  EXPECT_TRUE(absl::IsAlreadyExists(MaterializeModelCopy(
      base->copy, sources, fetcher, **store, dir + "/out/base", &again)));
}

TEST(ModelPackTest, CorruptedPartsAndLyingCopiesAreRefused) {
  const std::string dir = testing::TempDir("model_pack_bad");
  WriteModel(dir + "/m", 3);
  auto packed = PackModelDir(dir + "/m", "m", "c");
  ASSERT_TRUE(packed.ok());
  MapSource source;
  for (const auto& [id, bytes] : packed->parts) {
    source.blobs[id] = std::string(bytes);
  }
  source.corrupt.insert(packed->copy.files(1).parts(2).blob());
  auto store = BlobStore::Open(dir + "/store");
  ASSERT_TRUE(store.ok());
  BlobFetcher fetcher(store->get());
  BlobSource* sources[] = {&source};
  ModelFetchStats stats;
  absl::Status s = MaterializeModelCopy(packed->copy, sources, fetcher, **store,
                                        dir + "/out", &stats);
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/out"));
  // A copy whose parts do not make the file it claims.
  source.corrupt.clear();
  v1::ModelCopy lying = packed->copy;
  lying.mutable_files(0)->set_sha256(std::string(64, 'a'));
  s = MaterializeModelCopy(lying, sources, fetcher, **store, dir + "/out",
                           &stats);
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_FALSE(std::filesystem::exists(dir + "/out"));
}

TEST(ModelPackTest, InvalidCopiesNameWhatIsWrong) {
  for (const char* path :
       {"../x", "/etc/passwd", "a//b", ".git/config", "a b", "a/./b", ""}) {
    EXPECT_FALSE(ValidateModelFilePath(path).ok()) << path;
  }
  EXPECT_TRUE(ValidateModelFilePath("tokenizer/vocab-1.json").ok());
  v1::ModelCopy c;
  c.set_model_id("m");
  c.set_name("q8_0");
  v1::ModelFile* f = c.add_files();
  f->set_path("config.json");
  f->set_sha256(std::string(64, 'b'));
  f->set_bytes(10);
  v1::BlobPart* p = f->add_parts();
  p->set_blob(std::string(64, 'c'));
  p->set_bytes(9);
  absl::Status s = ValidateModelCopy(c);
  EXPECT_THAT(s.message(), HasSubstr("config.json is 10 bytes"));
  p->set_bytes(10);
  EXPECT_TRUE(ValidateModelCopy(c).ok());
  *c.add_files() = *f;
  EXPECT_THAT(ValidateModelCopy(c).message(), HasSubstr("twice"));
  c.set_name("../up");
  EXPECT_FALSE(ValidateModelCopy(c).ok());
}

}  // namespace
}  // namespace edgesplit
