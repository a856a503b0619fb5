#include "runtime/sampling.h"

#include <cmath>
#include <map>

#include "gtest/gtest.h"

namespace edgesplit {
namespace {

TEST(SamplingTest, GreedyTakesArgmaxLowestOnTies) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  std::vector<float> l = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(s.Sample(l, {}), 1);
}

TEST(SamplingTest, SameSeedSameTokens) {
  SamplingParams p;
  p.seed = 9;
  std::vector<float> l = {0.0f, 0.5f, 1.0f, 0.2f, -0.3f};
  Sampler a(p), b(p);
  std::vector<int32_t> ta, tb;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.Sample(l, {}));
    tb.push_back(b.Sample(l, {}));
  }
  EXPECT_EQ(ta, tb);
  p.seed = 10;
  Sampler c(p);
  std::vector<int32_t> tc;
  for (int i = 0; i < 50; ++i) tc.push_back(c.Sample(l, {}));
  EXPECT_NE(ta, tc);
}

// Frequencies follow softmax(logits / T).
TEST(SamplingTest, TemperatureSamplesTheSoftmax) {
  SamplingParams p;
  p.temperature = 0.5f;
  p.seed = 1;
  Sampler s(p);
  std::vector<float> l = {0.0f, 0.4f, 0.8f};
  std::vector<double> want(3);
  double z = 0;
  for (int i = 0; i < 3; ++i) z += want[i] = std::exp(l[i] / 0.5);
  const int n = 20000;
  std::vector<int> count(3);
  for (int i = 0; i < n; ++i) ++count[s.Sample(l, {})];
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(count[i] / double(n), want[i] / z, 0.02) << "token " << i;
  }
}

TEST(SamplingTest, TopKAndTopPRestrictTheCandidates) {
  std::vector<float> l = {5.0f, 4.0f, 3.0f, 0.0f, -1.0f};
  SamplingParams k;
  k.top_k = 2;
  k.seed = 3;
  Sampler sk(k);
  std::map<int, int> seen;
  for (int i = 0; i < 2000; ++i) ++seen[sk.Sample(l, {})];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[0], seen[1]);
  // softmax(l) = [.66, .24, .09, ...]: top_p 0.8 keeps tokens 0 and 1.
  SamplingParams p;
  p.top_p = 0.8f;
  p.seed = 4;
  Sampler sp(p);
  seen.clear();
  for (int i = 0; i < 2000; ++i) ++seen[sp.Sample(l, {})];
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen.count(2), 0u);
  // A tiny top_p keeps only the best token.
  p.top_p = 0.01f;
  Sampler one(p);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(one.Sample(l, {}), 0);
}

TEST(SamplingTest, RepetitionPenaltyAppliesOncePerDistinctToken) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  // 4/2 = 2 < 3: the repeated token loses, however often it was repeated.
  std::vector<float> l = {4.0f, 3.0f};
  EXPECT_EQ(s.Sample(l, {0, 0, 0}), 1);
  std::vector<float> l2 = {6.5f, 3.0f};  // 6.5/2 = 3.25 > 3 (not /8).
  EXPECT_EQ(s.Sample(l2, {0, 0, 0}), 0);
  std::vector<float> neg = {-1.0f, -1.5f};  // -1 * 2 = -2 < -1.5.
  EXPECT_EQ(s.Sample(neg, {0}), 1);
}

TEST(SamplingTest, ValidateNamesTheParameter) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_NE(p.Validate().message().find("temperature"), std::string::npos);
  p = SamplingParams();
  p.top_p = 0;
  EXPECT_NE(p.Validate().message().find("top_p"), std::string::npos);
  p = SamplingParams();
  p.top_k = -2;
  EXPECT_NE(p.Validate().message().find("top_k"), std::string::npos);
  p = SamplingParams();
  p.repetition_penalty = 0;
  EXPECT_FALSE(p.Validate().ok());
}

}  // namespace
}  // namespace edgesplit
