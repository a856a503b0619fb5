#include "proto/tensor_codec.h"

#include <ATen/ATen.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit {
namespace wire {
namespace {

using ::testing::HasSubstr;

TEST(TensorCodecTest, RoundTripsEveryCodec) {
  at::manual_seed(1);
  at::Tensor x = at::randn({7, 64}) * 3;
  for (v1::Codec c : SupportedCodecs()) {
    v1::Tensor msg;
    ASSERT_TRUE(Encode(x, c, &msg).ok()) << CodecName(c);
    EXPECT_EQ(static_cast<int64_t>(msg.data().size() + msg.scales().size()),
              EncodedBytes(c, 7, 64));
    auto y = Decode(msg, 64, "hidden");
    ASSERT_TRUE(y.ok()) << y.status();
    const double err = (*y - x).abs().max().item<double>();
    switch (c) {
      case v1::CODEC_FP32:
        EXPECT_EQ(err, 0.0);
        break;
      case v1::CODEC_FP16:
        EXPECT_LE(err, 1e-2);
        break;
      case v1::CODEC_BF16:
        EXPECT_LE(err, 6e-2);
        break;
      default: {
        // Half a quantization step of the row with the largest scale.
        const double step = x.abs().max().item<double>() / 127;
        EXPECT_LE(err, step / 2 + 1e-6);
      }
    }
  }
  EXPECT_EQ(EncodedBytes(v1::CODEC_FP32, 1, 2048), 8192);
  EXPECT_EQ(EncodedBytes(v1::CODEC_INT8_PER_TOKEN, 1, 2048), 2052);
  EXPECT_EQ(*ParseCodec("int8"), v1::CODEC_INT8_PER_TOKEN);
  EXPECT_FALSE(ParseCodec("fp8").ok());
}

class MalformedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(Encode(at::ones({3, 16}), v1::CODEC_FP16, &good_).ok());
  }
  std::string Error(const v1::Tensor& t, int64_t cols = 16) {
    auto r = Decode(t, cols, "forward.hidden");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("forward.hidden"));
    return std::string(r.status().message());
  }
  v1::Tensor good_;
};

TEST_F(MalformedTest, ByteCountNotShapeTimesCodec) {
  v1::Tensor t = good_;
  t.mutable_data()->pop_back();
  EXPECT_THAT(Error(t), HasSubstr("data has 95 bytes, shape [3, 16] with fp16 "
                                  "needs 96"));
}

TEST_F(MalformedTest, HugeOrNegativeDims) {
  v1::Tensor t = good_;
  t.set_shape(0, int64_t{1} << 40);
  EXPECT_THAT(Error(t), HasSubstr("row count 1099511627776"));
  t = good_;
  t.set_shape(1, -16);
  EXPECT_THAT(Error(t, 0), HasSubstr("width -16"));
  t = good_;
  t.add_shape(1);
  EXPECT_THAT(Error(t), HasSubstr("expected a 2-D tensor"));
}

TEST_F(MalformedTest, UnknownCodec) {
  v1::Tensor t = good_;
  t.set_codec(static_cast<v1::Codec>(77));
  EXPECT_THAT(Error(t), HasSubstr("unknown codec 77"));
  t.set_codec(v1::CODEC_UNSPECIFIED);
  EXPECT_THAT(Error(t), HasSubstr("unknown codec 0"));
}

TEST_F(MalformedTest, WrongHiddenSize) {
  EXPECT_THAT(Error(good_, 32),
              HasSubstr("width 16 but this stage expects 32"));
}

TEST_F(MalformedTest, Int8ScalesChecked) {
  v1::Tensor t;
  ASSERT_TRUE(Encode(at::ones({3, 16}), v1::CODEC_INT8_PER_TOKEN, &t).ok());
  v1::Tensor missing = t;
  missing.clear_scales();
  EXPECT_THAT(Error(missing), HasSubstr("scales have 0 bytes, expected 12"));
  v1::Tensor nan = t;
  float bad = std::nanf("");
  std::memcpy(nan.mutable_scales()->data(), &bad, 4);
  EXPECT_THAT(Error(nan), HasSubstr("finite"));
}

}  // namespace
}  // namespace wire
}  // namespace edgesplit
