#include "controller/fed_average.h"

#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;

using Matrix = std::vector<std::vector<double>>;

void Put(const Matrix& m, v1::NamedTensor* t) {
  t->mutable_tensor()->set_codec(v1::CODEC_FP32);
  t->mutable_tensor()->add_shape(static_cast<int64_t>(m.size()));
  t->mutable_tensor()->add_shape(static_cast<int64_t>(m[0].size()));
  std::string bytes;
  for (const auto& row : m) {
    for (double v : row) {
      const float f = static_cast<float>(v);
      bytes.append(reinterpret_cast<const char*>(&f), 4);
    }
  }
  t->mutable_tensor()->set_data(bytes);
}

Matrix Get(const v1::NamedTensor& t) {
  const int64_t rows = t.tensor().shape(0), cols = t.tensor().shape(1);
  Matrix m(rows, std::vector<double>(cols));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      float f;
      std::memcpy(&f, t.tensor().data().data() + 4 * (i * cols + j), 4);
      m[i][j] = f;
    }
  }
  return m;
}

Matrix Random(int rows, int cols, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(-1, 1);
  Matrix m(rows, std::vector<double>(cols));
  for (auto& row : m) {
    for (double& v : row) v = static_cast<float>(u(rng));  // fp32-exact
  }
  return m;
}

Matrix Mul(const Matrix& a, const Matrix& b) {
  Matrix c(a.size(), std::vector<double>(b[0].size(), 0));
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t k = 0; k < b.size(); ++k)
      for (size_t j = 0; j < b[0].size(); ++j) c[i][j] += a[i][k] * b[k][j];
  return c;
}

v1::AverageAdaptersRequest Request(const std::string& device, double samples,
                                   const Matrix& a, const Matrix& b) {
  v1::AverageAdaptersRequest r;
  r.set_job_id("job");
  r.set_round(3);
  r.set_devices(3);
  r.set_device(device);
  r.set_samples(samples);
  Put(a, r.add_factors());
  r.mutable_factors(0)->set_name("m.lora_A.weight");
  Put(b, r.add_factors());
  r.mutable_factors(1)->set_name("m.lora_B.weight");
  return r;
}

TEST(FedAverageTest, AveragesEachFactorWeightedBySamples) {
  std::mt19937 rng(5);
  const double samples[3] = {1, 2, 5};
  std::vector<Matrix> as, bs;
  std::vector<v1::AverageAdaptersRequest> reqs;
  for (int d = 0; d < 3; ++d) {
    as.push_back(Random(2, 6, rng));  // A: [r, in]
    bs.push_back(Random(4, 2, rng));  // B: [out, r]
    reqs.push_back(Request("d" + std::to_string(d), samples[d], as[d], bs[d]));
  }
  auto avg = AverageFactors({&reqs[0], &reqs[1], &reqs[2]});
  ASSERT_TRUE(avg.ok()) << avg.status();
  EXPECT_EQ(avg->devices(), 3u);
  EXPECT_EQ(avg->samples(), 8);
  const Matrix a = Get(avg->factors(0)), b = Get(avg->factors(1));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 6; ++j) {
      double want = 0;
      for (int d = 0; d < 3; ++d) want += samples[d] / 8 * as[d][i][j];
      EXPECT_NEAR(a[i][j], want, 1e-6);
    }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j) {
      double want = 0;
      for (int d = 0; d < 3; ++d) want += samples[d] / 8 * bs[d][i][j];
      EXPECT_NEAR(b[i][j], want, 1e-6);
    }

  // What the comment in fed_average.h says: the averaged adapter's update
  // B A is not the mean update sum w_i B_i A_i; the difference is exactly
  // the cross terms sum_{i != j} w_i w_j B_i A_j - sum_i w_i (1 - w_i)
  // B_i A_i.
  const Matrix ba = Mul(b, a);
  double worst_gap = 0;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 6; ++j) {
      double mean_update = 0, cross = 0;
      for (int x = 0; x < 3; ++x) {
        const double wx = samples[x] / 8;
        mean_update += wx * Mul(bs[x], as[x])[i][j];
        for (int y = 0; y < 3; ++y) {
          const double wy = samples[y] / 8;
          const double p = Mul(bs[x], as[y])[i][j];
          cross += x == y ? -wx * (1 - wx) * p : wx * wy * p;
        }
      }
      EXPECT_NEAR(ba[i][j] - mean_update, cross, 1e-5);
      worst_gap = std::max(worst_gap, std::abs(ba[i][j] - mean_update));
    }
  EXPECT_GT(worst_gap, 1e-3);  // mean(B) mean(A) != mean(B A) here...

  // ... and the gap vanishes when the devices share A (as after a round).
  for (int d = 0; d < 3; ++d) {
    reqs[d] = Request("d" + std::to_string(d), samples[d], as[0], bs[d]);
  }
  auto same_a = AverageFactors({&reqs[0], &reqs[1], &reqs[2]});
  ASSERT_TRUE(same_a.ok());
  const Matrix ba2 = Mul(Get(same_a->factors(1)), Get(same_a->factors(0)));
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 6; ++j) {
      double mean_update = 0;
      for (int d = 0; d < 3; ++d)
        mean_update += samples[d] / 8 * Mul(bs[d], as[0])[i][j];
      EXPECT_NEAR(ba2[i][j], mean_update, 1e-5);
    }
}

TEST(FedAverageTest, RoundsWaitForEveryDeviceAndRefuseBadInput) {
  std::mt19937 rng(1);
  const Matrix a = Random(2, 3, rng), b = Random(3, 2, rng);
  FedAverager avg;
  std::vector<absl::StatusOr<v1::AverageAdaptersResponse>> got;
  auto done = [&](absl::StatusOr<v1::AverageAdaptersResponse> r) {
    got.push_back(std::move(r));
  };
  const absl::Time later = absl::Now() + absl::Minutes(1);
  avg.Submit(Request("d0", 1, a, b), later, done);
  avg.Submit(Request("d1", 1, a, b), later, done);
  EXPECT_TRUE(got.empty());  // Waiting for the third device.

  // The same device twice, a different device count, a NaN: refused at
  // once, naming the device; the round goes on.
  avg.Submit(Request("d1", 1, a, b), later, done);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].status().code(), absl::StatusCode::kAlreadyExists);
  auto wrong = Request("d2", 1, a, b);
  wrong.set_devices(4);
  avg.Submit(wrong, later, done);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_THAT(got[1].status().message(), HasSubstr("devices: 4"));
  Matrix nan = a;
  nan[1][2] = std::nan("");
  avg.Submit(Request("d2", 1, nan, b), later, done);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_THAT(got[2].status().message(), HasSubstr("\"d2\""));
  EXPECT_THAT(got[2].status().message(), HasSubstr("non-finite"));
  auto shape = Request("d2", 1, a, b);
  shape.mutable_factors(0)->mutable_tensor()->set_data("abc");
  avg.Submit(shape, later, done);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[3].status().code(), absl::StatusCode::kInvalidArgument);

  avg.Submit(Request("d2", 1, a, b), later, done);
  ASSERT_EQ(got.size(), 7u);  // All three answered together.
  for (int i = 4; i < 7; ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status();
    EXPECT_EQ(got[i]->devices(), 3u);
  }

  // A round some device never joins fails for those waiting.
  got.clear();
  auto r = Request("d0", 1, a, b);
  r.set_round(4);
  avg.Submit(r, absl::Now() + absl::Milliseconds(1), done);
  avg.Expire(absl::Now() + absl::Seconds(1));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].status().code(), absl::StatusCode::kDeadlineExceeded);
}

// Rounds hold at most fed_memory_mb of adapters together: a submission
// beyond is refused naming the limit; expired and completed rounds give
// their bytes back.
TEST(FedAverageTest, RoundsTogetherHoldAtMostTheirMemoryLimit) {
  std::mt19937 rng(2);
  const Matrix a = Random(4, 8, rng), b = Random(8, 4, rng);
  auto in_job = [&](const std::string& job, const std::string& device) {
    auto r = Request(device, 1, a, b);
    r.set_job_id(job);
    r.set_devices(2);
    return r;
  };
  const int64_t one = static_cast<int64_t>(in_job("j1", "d0").ByteSizeLong());
  FedAverager avg(one * 5 / 2);  // Room for two adapters.
  std::vector<absl::StatusOr<v1::AverageAdaptersResponse>> got;
  auto done = [&](absl::StatusOr<v1::AverageAdaptersResponse> r) {
    got.push_back(std::move(r));
  };
  const absl::Time later = absl::Now() + absl::Minutes(1);
  avg.Submit(in_job("j1", "d0"), later, done);
  avg.Submit(in_job("j2", "d0"), absl::Now() + absl::Milliseconds(1), done);
  EXPECT_EQ(avg.held_bytes(), 2 * one);
  avg.Submit(in_job("j3", "d0"), later, done);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(got[0].status().message(), HasSubstr("fed_memory_mb"));
  avg.Expire(absl::Now() + absl::Seconds(1));  // j2 never completes.
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(avg.held_bytes(), one);
  avg.Submit(in_job("j1", "d1"), later, done);  // Completes j1.
  ASSERT_EQ(got.size(), 4u);
  EXPECT_TRUE(got[2].ok()) << got[2].status();
  EXPECT_TRUE(got[3].ok()) << got[3].status();
  EXPECT_EQ(avg.held_bytes(), 0);
}

// fed_selection: after the first round (every device) the controller
// averages only the `per_round` cheapest devices by their reported noise
// and pace; the round completes without waiting for the rest, which send
// no factors and adopt the same average when they come.
TEST(FedAverageTest, SelectionAveragesTheQuietAndFastAndSparesTheRest) {
  std::mt19937 rng(3);
  std::vector<Matrix> a, b;
  for (int d = 0; d < 3; ++d) {
    a.push_back(Random(2, 3, rng));
    b.push_back(Random(3, 2, rng));
  }
  auto req = [&](int d, uint64_t round, double noise, double seconds,
                 bool factors = true) {
    auto r = Request(absl::StrCat("d", d), 1.0 + d, a[d], b[d]);
    r.set_round(round);
    r.set_noise_std(noise);
    r.set_seconds_per_window(seconds);
    r.set_participants(round >= 2 ? 2 : 0);  // As each answer said.
    if (!factors) {                          // Sat the round out.
      r.clear_factors();
      r.set_samples(0);
      r.set_sat_out(true);
    }
    return r;
  };
  FedAverager avg(int64_t{1} << 30, "fed_memory_mb", FedSelection{2, 1.0, 1.0});
  std::vector<absl::StatusOr<v1::AverageAdaptersResponse>> got;
  auto done = [&](absl::StatusOr<v1::AverageAdaptersResponse> r) {
    got.push_back(std::move(r));
  };
  const absl::Time later = absl::Now() + absl::Minutes(1);
  // Round 1: every device trains (nothing was known); d2 adds much noise.
  for (int d = 0; d < 3; ++d)
    avg.Submit(req(d, 1, d == 2 ? 5 : 0, 1), later, done);
  ASSERT_EQ(got.size(), 3u);
  ASSERT_TRUE(got[0].ok()) << got[0].status();
  // Its reports are in with the factors: the average leaves d2 out already.
  EXPECT_THAT(got[0]->averaged(), ::testing::ElementsAre("d0", "d1"));
  EXPECT_THAT(got[0]->selected_next(), ::testing::ElementsAre("d0", "d1"));

  // Round 2: complete once d0 and d1 sent; the mean is theirs alone.
  got.clear();
  avg.Submit(req(2, 2, 0, 1, /*factors=*/false), later, done);  // Quiet now.
  EXPECT_TRUE(got.empty());
  // Every device of a round trained with the same participants.
  auto all = req(0, 2, 0, 1);
  all.set_participants(0);
  avg.Submit(all, later, done);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_THAT(got[0].status().message(),
              HasSubstr("participants: 3 but the round has 2"));
  got.clear();
  avg.Submit(req(0, 2, 0, 1), later, done);
  EXPECT_TRUE(got.empty());
  avg.Submit(req(1, 2, 0, 1), later, done);
  ASSERT_EQ(got.size(), 3u);  // d2 waited for the average too.
  for (const auto& r : got) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_THAT(r->averaged(), ::testing::ElementsAre("d0", "d1"));
    EXPECT_DOUBLE_EQ(r->samples(), 3.0);
    const Matrix m = Get(r->factors(0));
    EXPECT_NEAR(m[1][2], (1 * a[0][1][2] + 2 * a[1][1][2]) / 3, 1e-6);
  }
  EXPECT_EQ(avg.held_bytes(), 0);

  // Round 3: d0 became slow (its link); d1 and d2 (quiet now) come
  // first and get their answer; d0 comes later and gets it at once.
  got.clear();
  avg.Submit(req(0, 3, 0, 10), later, done);  // Still selected this round.
  avg.Submit(req(1, 3, 0, 1), later, done);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_THAT(got[0]->selected_next(), ::testing::ElementsAre("d1", "d2"));
  EXPECT_GT(avg.held_bytes(), 0);  // The average, kept for d2.
  avg.Submit(req(2, 3, 0, 1, /*factors=*/false), later, done);
  ASSERT_EQ(got.size(), 3u);
  ASSERT_TRUE(got[2].ok()) << got[2].status();
  EXPECT_THAT(got[2]->averaged(), ::testing::ElementsAre("d0", "d1"));
  EXPECT_EQ(got[2]->factors(0).tensor().data(),
            got[0]->factors(0).tensor().data());
  EXPECT_EQ(avg.held_bytes(), 0);  // Everyone came: the round is gone.
  got.clear();
  avg.Submit(req(1, 4, 0, 1), later, done);
  avg.Submit(req(2, 4, 0, 1), later, done);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_THAT(got[0]->averaged(), ::testing::ElementsAre("d1", "d2"));
  avg.Submit(req(0, 4, 0, 10, /*factors=*/false), later, done);
  EXPECT_EQ(got.size(), 3u);

  // A new run: every device trains again (participants 0), whatever the
  // last selection, and this round's reports choose whom to average.
  got.clear();
  for (int d = 0; d < 3; ++d) {
    auto r = req(d, 1, 0, d == 0 ? 10 : 1);
    r.set_participants(0);
    avg.Submit(r, later, done);
  }
  ASSERT_EQ(got.size(), 3u);
  EXPECT_THAT(got[0]->averaged(), ::testing::ElementsAre("d1", "d2"));
  EXPECT_EQ(avg.held_bytes(), 0);
}

// A device sitting a round out asks at the round's start: its wait ends at
// its own deadline (not the round's), and it may ask again.
TEST(FedAverageTest, SittingOutWaitsUntilItsOwnDeadlineAndAsksAgain) {
  std::mt19937 rng(5);
  const Matrix a = Random(2, 2, rng), b = Random(2, 2, rng);
  auto req = [&](const std::string& d, bool sat_out) {
    auto r = Request(d, 1, a, b);
    r.set_participants(2);
    if (sat_out) {
      r.clear_factors();
      r.set_samples(0);
      r.set_sat_out(true);
    }
    return r;
  };
  FedAverager avg(int64_t{1} << 30, "fed_memory_mb", FedSelection{2, 1, 1});
  std::vector<absl::StatusOr<v1::AverageAdaptersResponse>> got;
  auto done = [&](absl::StatusOr<v1::AverageAdaptersResponse> r) {
    got.push_back(std::move(r));
  };
  const absl::Time now = absl::Now();
  avg.Submit(req("d2", true), now + absl::Seconds(1), done);
  avg.Submit(req("d0", false), now + absl::Minutes(5), done);
  avg.Expire(now + absl::Seconds(2));  // Only d2's wait ran out.
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].status().code(), absl::StatusCode::kDeadlineExceeded);
  avg.Submit(req("d2", true), now + absl::Minutes(5), done);  // Again.
  EXPECT_EQ(got.size(), 1u);
  avg.Submit(req("d1", false), now + absl::Minutes(5), done);
  ASSERT_EQ(got.size(), 4u);
  for (int i = 1; i < 4; ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status();
    EXPECT_THAT(got[i]->averaged(), ::testing::ElementsAre("d0", "d1"));
  }
  EXPECT_EQ(avg.held_bytes(), 0);
  // Sitting out where every device takes part, or with factors: refused.
  auto bad = req("d2", true);
  bad.set_participants(0);
  EXPECT_THAT(ValidateAverageRequest(bad).message(), HasSubstr("sat_out"));
  bad = req("d2", false);
  bad.set_sat_out(true);
  EXPECT_THAT(ValidateAverageRequest(bad).message(), HasSubstr("sat_out"));
  bad = req("d2", false);
  bad.set_participants(4);
  EXPECT_THAT(ValidateAverageRequest(bad).message(),
              HasSubstr("participants: 4"));
}

TEST(FedAverageTest, SelectionPricesNoiseAndPaceAgainstTheirMeans) {
  std::map<std::string, std::pair<double, double>> reports = {
      {"quiet-slow", {0, 3}}, {"noisy-fast", {2, 1}}, {"even", {1, 2}}};
  // Means 1 and 2: costs 1.5, 2.5, 2.0 with equal weights.
  EXPECT_THAT(SelectDevices({1, 1, 1}, reports),
              ::testing::ElementsAre("quiet-slow"));
  EXPECT_THAT(SelectDevices({1, 0, 1}, reports),
              ::testing::ElementsAre("noisy-fast"));
  EXPECT_THAT(SelectDevices({2, 1, 0}, reports),
              ::testing::ElementsAre("even", "quiet-slow"));
  EXPECT_THAT(SelectDevices({0, 1, 1}, reports), ::testing::IsEmpty());
}

TEST(FedAverageTest, SelectionConfigAndReportsAreChecked) {
  YamlReader r("controller.yaml");
  auto parse = [&](const std::string& text) {
    auto root = r.Parse(text);
    EXPECT_TRUE(root.ok());
    return ParseFedSelection(r, *root);
  };
  auto s = parse("fed_selection: {per_round: 3, link_weight: 0.5}\n");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->per_round, 3);
  EXPECT_EQ(s->noise_weight, 1.0);
  EXPECT_EQ(s->link_weight, 0.5);
  EXPECT_EQ(parse("listen: x\n")->per_round, 0);
  for (const char* bad :
       {"fed_selection: 3\n", "fed_selection: {per_round: -1}\n",
        "fed_selection: {noise_weight: fast}\n",
        "fed_selection: {link_weight: -2}\n"}) {
    auto e = parse(bad);
    EXPECT_FALSE(e.ok()) << bad;
    EXPECT_THAT(e.status().message(), HasSubstr("controller.yaml")) << bad;
    EXPECT_THAT(e.status().message(), HasSubstr("fed_selection")) << bad;
  }
  std::mt19937 rng(4);
  auto q = Request("d0", 1, Random(2, 2, rng), Random(2, 2, rng));
  q.set_seconds_per_window(-1);
  EXPECT_THAT(ValidateAverageRequest(q).message(),
              HasSubstr("seconds_per_window: -1"));
  q.set_seconds_per_window(1);
  q.set_noise_std(std::nan(""));
  EXPECT_THAT(ValidateAverageRequest(q).message(), HasSubstr("noise_std"));
}

}  // namespace
}  // namespace edgesplit
