#include "privacy/budget.h"

#include "base/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/test_paths.h"

namespace edgesplit::privacy {
namespace {

using ::testing::HasSubstr;

std::vector<double> Steps(double q, double sigma, int64_t steps) {
  RdpAccountant a;
  EXPECT_TRUE(a.AddSampledGaussian(q, sigma, steps).ok());
  return a.rdp();
}

TEST(PrivacyBudgetTest, SpendingPersistsAndWorkBeyondTheLimitIsRefused) {
  const std::string path = testing::TempDir("budget") + "/user.json";
  auto b = PrivacyBudget::Open(path, 2.0, 1e-5);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->Spent().epsilon, 0);
  auto first = (*b)->Charge(Steps(0.01, 1.1, 500));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_GT(first->epsilon, 0);
  EXPECT_LE(first->epsilon, 2.0);

  // After a restart the spending is still there, and composes.
  b->reset();
  auto again = PrivacyBudget::Open(path, 2.0, 1e-5);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NEAR((*again)->Spent().epsilon, first->epsilon, 1e-12);
  const std::string before = *ReadFile(path);
  auto refused = (*again)->Charge(Steps(0.01, 1.1, 100000));
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status()));
  EXPECT_THAT(refused.status().message(), HasSubstr("limit 2"));
  EXPECT_EQ(*ReadFile(path), before);  // Nothing recorded.
  EXPECT_NEAR((*again)->Spent().epsilon, first->epsilon, 1e-12);
  auto more = (*again)->Charge(Steps(0.01, 1.1, 100));
  ASSERT_TRUE(more.ok());
  EXPECT_GT(more->epsilon, first->epsilon);
}

TEST(PrivacyBudgetTest, BadFilesAndSettingsNameWhatIsWrong) {
  const std::string dir = testing::TempDir("budget_bad");
  for (const auto& [text, field] :
       std::vector<std::pair<std::string, std::string>>{
           {"{\"orders\": [2, 3]}", "rdp"},
           {"{\"orders\": [2], \"rdp\": [-1]}", "rdp"},
           {"{\"orders\": [1], \"rdp\": [0]}", "orders"},
           {"{\"orders\": [2, 3], \"rdp\": [0]}", "rdp values"},
           {"[1, 2]", "not a JSON object"},
           {"{\"orders\": \"x\", \"rdp\": [0]}", "orders"}}) {
    ASSERT_TRUE(WriteFileAtomically(dir + "/b.json", text).ok());
    auto b = PrivacyBudget::Open(dir + "/b.json", 1, 1e-5);
    ASSERT_FALSE(b.ok()) << text;
    EXPECT_THAT(b.status().message(), HasSubstr(dir + "/b.json")) << text;
    EXPECT_THAT(b.status().message(), HasSubstr(field)) << text;
  }
  EXPECT_FALSE(PrivacyBudget::Open(dir + "/x.json", 0, 1e-5).ok());
  EXPECT_FALSE(PrivacyBudget::Open(dir + "/x.json", 1, 1).ok());
  auto ok = PrivacyBudget::Open(dir + "/x.json", 1, 1e-5);
  ASSERT_TRUE(ok.ok());
  EXPECT_FALSE((*ok)->Charge({1.0}).ok());  // Wrong number of orders.
}

}  // namespace
}  // namespace edgesplit::privacy
