#include "openai/protocol.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace edgesplit {
namespace openai {
namespace {

using json = nlohmann::json;

TEST(ProtocolTest, ParsesACompletionWithEveryKnob) {
  auto r = ParseCompletionRequest(
      R"({"model": "stories:tales", "prompt": ["Once"], "max_tokens": 7,
          "temperature": 0.5, "top_p": 0.9, "top_k": 40, "seed": -3,
          "stop": ["\n", "", "END"], "stream": true, "n": 1,
          "stream_options": {"include_usage": true}, "user": "u",
          "logprobs": null, "presence_penalty": 0})",
      /*chat=*/false);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "stories");
  EXPECT_EQ(r->adapter, "tales");
  EXPECT_EQ(r->model_field, "stories:tales");
  EXPECT_EQ(r->prompt, "Once");
  EXPECT_EQ(r->sampling.max_new_tokens, 7);
  EXPECT_FLOAT_EQ(r->sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r->sampling.top_p, 0.9f);
  EXPECT_EQ(r->sampling.top_k, 40);
  EXPECT_EQ(r->sampling.seed, static_cast<uint64_t>(int64_t{-3}));
  EXPECT_EQ(r->sampling.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
}

TEST(ProtocolTest, DefaultsFollowOpenAi) {
  auto c = ParseCompletionRequest(R"({"model": "m", "prompt": "x"})", false);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->sampling.max_new_tokens, 16);
  EXPECT_FLOAT_EQ(c->sampling.temperature, 1.0f);
  EXPECT_FALSE(c->stream);
  // No seed: each request samples afresh.
  auto again =
      ParseCompletionRequest(R"({"model": "m", "prompt": "x"})", false);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(c->sampling.seed, again->sampling.seed);
  auto chat = ParseCompletionRequest(
      R"({"model": "m", "messages": [{"role": "user", "content": "hi"}],
          "max_completion_tokens": 5})",
      true);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->sampling.max_new_tokens, 5);
  ASSERT_EQ(chat->messages.size(), 1u);
  EXPECT_EQ(chat->messages[0].role, "user");
  EXPECT_EQ(chat->messages[0].content, "hi");
  auto unlimited = ParseCompletionRequest(
      R"({"model": "m", "messages": [{"role": "user", "content":
          [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})",
      true);
  ASSERT_TRUE(unlimited.ok()) << unlimited.status();
  EXPECT_GT(unlimited->sampling.max_new_tokens, 1 << 20);
  EXPECT_EQ(unlimited->messages[0].content, "ab");
}

TEST(ProtocolTest, RefusalsNameTheField) {
  struct Case {
    const char* body;
    bool chat;
    const char* param;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"prompt": "x"})", false, "model"},
           {R"({"model": 3, "prompt": "x"})", false, "model"},
           {R"({"model": "m:", "prompt": "x"})", false, "model"},
           {R"({"model": "m"})", false, "prompt"},
           {R"({"model": "m", "prompt": ["a", "b"]})", false, "prompt"},
           {R"({"model": "m", "prompt": "x", "n": 2})", false, "n"},
           {R"({"model": "m", "prompt": "x", "echo": true})", false, "echo"},
           {R"({"model": "m", "prompt": "x", "logprobs": 2})", false,
            "logprobs"},
           {R"({"model": "m", "prompt": "x", "temperature": 3})", false,
            "temperature"},
           {R"({"model": "m", "prompt": "x", "top_p": 0})", false, "top_p"},
           {R"({"model": "m", "prompt": "x", "max_tokens": -1})", false,
            "max_tokens"},
           {R"({"model": "m", "prompt": "x", "max_tokens": 1.5})", false,
            "max_tokens"},
           {R"({"model": "m", "prompt": "x", "stop": 5})", false, "stop"},
           {R"({"model": "m", "prompt": "x", "frequency_penalty": 1})", false,
            "frequency_penalty"},
           {R"({"model": "m", "prompt": "x", "stream": "yes"})", false,
            "stream"},
           {R"({"model": "m", "messages": []})", true, "messages"},
           {R"({"model": "m", "messages": [{"content": "x"}]})", true,
            "messages"},
           {R"({"model": "m", "messages": [{"role": "user", "content":
               [{"type": "image_url"}]}]})",
            true, "messages"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
               "tools": []})",
            true, "tools"},
       }) {
    std::string param;
    auto r = ParseCompletionRequest(c.body, c.chat, &param);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(param, c.param) << c.body << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.param), std::string::npos)
        << r.status();
  }
  for (const char* body : {"", "{", "[1]", "{\"model\": \"m\",}", "null"}) {
    EXPECT_EQ(ParseCompletionRequest(body, false).status().code(),
              absl::StatusCode::kInvalidArgument)
        << body;
  }
  std::string too_many = R"({"model": "m", "prompt": "x", "stop": [)";
  for (int i = 0; i <= kMaxStopStrings; ++i) {
    too_many += (i ? ",\"s" : "\"s") + std::to_string(i) + "\"";
  }
  EXPECT_FALSE(ParseCompletionRequest(too_many + "]}", false).ok());
}

TEST(ProtocolTest, ResponsesHaveOpenAisShape) {
  auto chat = ParseCompletionRequest(
      R"({"model": "m:a", "messages": [{"role": "user", "content": "x"}],
          "stream": true, "stream_options": {"include_usage": true}})",
      true);
  ASSERT_TRUE(chat.ok());
  const ResponseId id = NewResponseId(true);
  EXPECT_EQ(id.id.rfind("chatcmpl-", 0), 0u);
  CompletionResult result{"Hello \xE4\xB8\x96", 3, 2, "stop"};
  json whole = json::parse(CompletionJson(*chat, id, result));
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["model"], "m:a");
  EXPECT_EQ(whole["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(whole["choices"][0]["message"]["content"], result.text);
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(whole["usage"]["total_tokens"], 5);
  // Events: "data: <json>\n\n".
  auto body = [](const std::string& event) {
    EXPECT_EQ(event.rfind("data: ", 0), 0u);
    EXPECT_EQ(event.substr(event.size() - 2), "\n\n");
    return json::parse(event.substr(6));
  };
  EXPECT_EQ(body(FirstChunkEvent(*chat, id))["choices"][0]["delta"]["role"],
            "assistant");
  json piece = body(TextChunkEvent(*chat, id, "lo"));
  EXPECT_EQ(piece["object"], "chat.completion.chunk");
  EXPECT_EQ(piece["choices"][0]["delta"]["content"], "lo");
  EXPECT_TRUE(piece["choices"][0]["finish_reason"].is_null());
  const TextEvents events(*chat, id);
  for (const char* text : {"lo", "", "\"quoted\"\n\\", "\x01mark\x01",
                           "bad \xFF utf-8", "\xE4\xB8\x96"}) {
    EXPECT_EQ(events.Event(text), TextChunkEvent(*chat, id, text)) << text;
  }
  const std::string last = FinalChunkEvents(*chat, id, result);
  const size_t split = last.find("\n\ndata: ") + 2;
  EXPECT_EQ(body(last.substr(0, split))["choices"][0]["finish_reason"], "stop");
  json usage = body(last.substr(split));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 2);

  json err = json::parse(
      ErrorJson(absl::NotFoundError("model \"x\" is not served"), "model"));
  EXPECT_EQ(err["error"]["type"], "invalid_request_error");
  EXPECT_EQ(err["error"]["param"], "model");
  EXPECT_EQ(err["error"]["code"], "model_not_found");
  EXPECT_EQ(HttpStatusFor(absl::NotFoundError("")), 404);
  EXPECT_EQ(HttpStatusFor(absl::InvalidArgumentError("")), 400);
  EXPECT_EQ(HttpStatusFor(absl::UnavailableError("")), 503);
  EXPECT_EQ(HttpStatusFor(absl::InternalError("")), 500);
  json models = json::parse(ModelsJson({"a", "a:b"}));
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][1]["id"], "a:b");
  EXPECT_EQ(models["data"][1]["object"], "model");
}

}  // namespace
}  // namespace openai
}  // namespace edgesplit
