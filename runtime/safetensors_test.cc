#include "runtime/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit {
namespace {

// Written by the fuzz loop so reading every byte is not optimised away.
volatile uint8_t g_sink = 0;

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("edgesplit_st_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

// A file with the given raw header text and `data_bytes` zero bytes.
std::string WriteRaw(const std::string& name, const std::string& header,
                     size_t data_bytes, int64_t claimed_len = -1) {
  const std::string path = TempPath(name);
  std::ofstream out(path, std::ios::binary);
  uint64_t len = claimed_len >= 0 ? claimed_len : header.size();
  for (int i = 0; i < 8; ++i)
    out.put(static_cast<char>((len >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
  return path;
}

absl::Status OpenStatus(const std::string& path) {
  return SafetensorsFile::Open(path).status();
}

TEST(SafetensorsTest, WriteThenReadRoundTrip) {
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {7, 8};
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("a", DType::kF32, {2, 3},
                    {reinterpret_cast<uint8_t*>(a.data()), 24})
                  .ok());
  ASSERT_TRUE(w.Add("b.half", DType::kF16, {2},
                    {reinterpret_cast<uint8_t*>(b.data()), 4})
                  .ok());
  EXPECT_FALSE(w.Add("a", DType::kF32, {1}, {nullptr, 4}).ok());
  EXPECT_FALSE(w.Add("c", DType::kF32, {2}, {nullptr, 4}).ok());
  w.SetMetadata("format", "pt");
  const std::string path = TempPath("roundtrip");
  ASSERT_TRUE(w.Write(path).ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 2u);
  const TensorInfo* ta = (*f)->Find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  auto data = (*f)->Data(*ta);
  ASSERT_EQ(data.size(), 24u);
  EXPECT_EQ(std::memcmp(data.data(), a.data(), 24), 0);
  // The data section is 8-byte aligned for zero-copy tensors.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(data.data()) % 8, 0u);
  EXPECT_EQ((*f)->Find("b.half")->dtype, DType::kF16);
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  EXPECT_EQ((*f)->Find("zzz"), nullptr);
}

TEST(SafetensorsTest, TruncatedFile) {
  auto path = WriteRaw("short", "", 0);
  std::filesystem::resize_file(path, 5);
  auto s = OpenStatus(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(path));
  EXPECT_THAT(s.message(), HasSubstr("too short"));
}

TEST(SafetensorsTest, HeaderLengthPastEnd) {
  auto path = WriteRaw("hlen", "{}", 0, /*claimed_len=*/1000);
  EXPECT_THAT(OpenStatus(path).message(),
              HasSubstr("header length 1000 past end of file"));
  path =
      WriteRaw("hlen_huge", "{}", 0, /*claimed_len=*/-2 & 0x7fffffffffffffff);
  EXPECT_THAT(OpenStatus(path).message(), HasSubstr("past end of file"));
}

TEST(SafetensorsTest, OffsetsPastEnd) {
  auto path = WriteRaw(
      "past", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  auto s = OpenStatus(path);
  EXPECT_THAT(s.message(), HasSubstr("tensor \"w\""));
  EXPECT_THAT(s.message(), HasSubstr("past end of data (8 bytes)"));
}

TEST(SafetensorsTest, OverlappingOffsets) {
  auto path =
      WriteRaw("overlap",
               R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               12);
  auto s = OpenStatus(path);
  EXPECT_THAT(s.message(), HasSubstr("tensor \"b\": data_offsets overlap "
                                     "tensor \"a\""));
}

TEST(SafetensorsTest, UnknownDtype) {
  auto path = WriteRaw(
      "dtype", R"({"w":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", 4);
  EXPECT_THAT(OpenStatus(path).message(),
              HasSubstr("tensor \"w\": unknown dtype \"F31\""));
}

TEST(SafetensorsTest, ByteCountMismatch) {
  auto path = WriteRaw(
      "count", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  EXPECT_THAT(OpenStatus(path).message(),
              HasSubstr("byte count 8 does not match shape and dtype F32 "
                        "(expected 12)"));
  path =
      WriteRaw("overflow",
               R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],)"
               R"("data_offsets":[0,8]}})",
               8);
  EXPECT_THAT(OpenStatus(path).message(), HasSubstr("overflows"));
  path =
      WriteRaw("negative",
               R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}})", 8);
  EXPECT_THAT(OpenStatus(path).message(), HasSubstr("non-negative integer"));
}

TEST(SafetensorsTest, MalformedHeaders) {
  EXPECT_THAT(OpenStatus(WriteRaw("json", "{not json", 0)).message(),
              HasSubstr("not valid JSON"));
  EXPECT_THAT(OpenStatus(WriteRaw("array", "[1,2]", 0)).message(),
              HasSubstr("not a JSON object"));
  EXPECT_THAT(OpenStatus(WriteRaw("entry", R"({"w": 3})", 0)).message(),
              HasSubstr("entry is not an object"));
  EXPECT_THAT(
      OpenStatus(WriteRaw("noshape",
                          R"({"w":{"dtype":"F32","data_offsets":[0,0]}})", 0))
          .message(),
      HasSubstr("\"shape\""));
  EXPECT_THAT(
      OpenStatus(WriteRaw("meta", R"({"__metadata__":{"a":1}})", 0)).message(),
      HasSubstr("__metadata__"));
  // Nesting bombs are rejected before nlohmann's recursive code sees them.
  EXPECT_THAT(OpenStatus(WriteRaw("deep",
                                  R"({"w":{"dtype":"F32","shape":)" +
                                      std::string(100000, '[') + "}}",
                                  0))
                  .message(),
              HasSubstr("nested deeper"));
  EXPECT_EQ(OpenStatus(TempPath("does_not_exist")).code(),
            absl::StatusCode::kNotFound);
}

// No byte pattern may crash the reader: mutate a valid file's header and
// length bytes at random and open it thousands of times.
TEST(SafetensorsTest, RandomCorruptionNeverCrashes) {
  std::vector<float> a(16, 1.0f);
  SafetensorsWriter w;
  ASSERT_TRUE(w.Add("x", DType::kF32, {4, 4},
                    {reinterpret_cast<uint8_t*>(a.data()), 64})
                  .ok());
  ASSERT_TRUE(
      w.Add("y", DType::kBF16, {8}, {reinterpret_cast<uint8_t*>(a.data()), 16})
          .ok());
  const std::string good = TempPath("fuzz_src");
  ASSERT_TRUE(w.Write(good).ok());
  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  const std::string path = TempPath("fuzz");
  std::mt19937 rng(42);
  int opened = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string m = bytes;
    const int edits = 1 + rng() % 4;
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % std::min<size_t>(m.size(), 8 + 160);
      m[pos] = static_cast<char>(
          rng() % 4 == 0 ? "0123456789[]{},:\""[rng() % 17] : rng());
    }
    if (rng() % 8 == 0) m.resize(rng() % m.size());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << m;
    auto f = SafetensorsFile::Open(path);
    if (f.ok()) {
      ++opened;
      for (const TensorInfo& t : (*f)->tensors()) {
        auto d = (*f)->Data(t);
        uint8_t sum = 0;
        for (uint8_t b : d) sum ^= b;  // Every byte in range (ASan checks).
        g_sink = sum;
      }
    }
  }
  EXPECT_GT(opened, 0);
}

}  // namespace
}  // namespace edgesplit
