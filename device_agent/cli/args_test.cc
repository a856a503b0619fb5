#include "device_agent/cli/args.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace edgesplit {
namespace cli {
namespace {

using ::testing::HasSubstr;

TEST(ArgsTest, ParsesFlagsAndPositionals) {
  auto a = Args::Parse({"dir", "--n", "3", "--x=1.5", "--v", "--list=1,2"},
                       {"n", "x", "list"}, {"v"});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->positional(), std::vector<std::string>{"dir"});
  EXPECT_EQ(*a->Int("n", 0), 3);
  EXPECT_EQ(*a->Double("x", 0), 1.5);
  EXPECT_TRUE(a->Has("v"));
  EXPECT_EQ(*a->IntList("list"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(*a->Int("missing", 7), 7);
}

TEST(ArgsTest, ErrorsNameTheFlag) {
  EXPECT_THAT(Args::Parse({"--bogus"}, {}, {}).status().message(),
              HasSubstr("--bogus"));
  EXPECT_THAT(Args::Parse({"--n"}, {"n"}, {}).status().message(),
              HasSubstr("--n"));
  // The closest known flag is suggested.
  EXPECT_THAT(Args::Parse({"--temprature", "1"}, {"temperature"}, {})
                  .status()
                  .message(),
              HasSubstr("did you mean --temperature?"));
  // A boolean flag with a value that is not one: a usage error, not a
  // crash; =false leaves it off.
  EXPECT_THAT(Args::Parse({"--v=bogus"}, {}, {"v"}).status().message(),
              HasSubstr("--v"));
  auto off = Args::Parse({"--v=false"}, {}, {"v"});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->Has("v"));
  // An explicitly empty value stays empty (the next word is not taken),
  // and values may start with '-'.
  auto empty = Args::Parse({"--s=", "--v", "--n", "-3"}, {"s", "n"}, {"v"});
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->Has("s"));
  EXPECT_EQ(empty->String("s", "unset"), "");
  EXPECT_TRUE(empty->Has("v"));
  EXPECT_EQ(*empty->Int("n", 0), -3);
  // A repeated flag: the last value wins.
  auto last = Args::Parse({"--n", "1", "--n", "2"}, {"n"}, {});
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(*last->Int("n", 0), 2);
  auto a = Args::Parse({"--n", "x3"}, {"n"}, {});
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(a->Int("n", 0).status().message(), HasSubstr("\"x3\""));
  EXPECT_THAT(a->RequiredString("model").status().message(),
              HasSubstr("missing --model"));
}

}  // namespace
}  // namespace cli
}  // namespace edgesplit
