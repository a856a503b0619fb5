#include "openai/protocol.h"

#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace edgesplit {
namespace openai {
namespace {

using json = nlohmann::json;

// Chat's default when the request sets no limit: the model's context ends
// it first (GenerateIds stops there).
constexpr int32_t kUnlimitedTokens = 1 << 30;

// One request field's parse: errors name it and keep it for "param".
class Fields {
 public:
  Fields(const json& body, std::string* param) : body_(body), param_(param) {}

  const json* Get(const char* name) const {
    auto it = body_.find(name);
    if (it == body_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  absl::Status Error(const char* name, absl::string_view what) const {
    if (param_ != nullptr) *param_ = name;
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", what));
  }
  absl::Status Bad(const char* name, const json& v,
                   absl::string_view want) const {
    return Error(name, absl::StrCat(DescribeJson(v), " is not ", want));
  }
  absl::StatusOr<std::string> String(const char* name, bool required) const {
    const json* v = Get(name);
    if (v == nullptr) {
      if (required) return Error(name, "required");
      return std::string();
    }
    if (!v->is_string()) return Bad(name, *v, "a string");
    return v->get<std::string>();
  }
  // A number in [lo, hi], or `fallback` when absent.
  absl::StatusOr<double> Number(const char* name, double lo, double hi,
                                double fallback) const {
    const json* v = Get(name);
    if (v == nullptr) return fallback;
    if (!v->is_number()) return Bad(name, *v, "a number");
    const double d = v->get<double>();
    if (!(d >= lo && d <= hi)) {
      return Error(name, absl::StrCat(d, " is not in [", lo, ", ", hi, "]"));
    }
    return d;
  }
  absl::StatusOr<int64_t> Int(const char* name, int64_t lo, int64_t hi,
                              int64_t fallback) const {
    const json* v = Get(name);
    if (v == nullptr) return fallback;
    if (!v->is_number_integer()) return Bad(name, *v, "an integer");
    if (v->is_number_unsigned()) {
      const uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(hi)) {
        return Error(name, absl::StrCat(u, " is not in [", lo, ", ", hi, "]"));
      }
      return static_cast<int64_t>(u);
    }
    const int64_t i = v->get<int64_t>();
    if (i < lo || i > hi) {
      return Error(name, absl::StrCat(i, " is not in [", lo, ", ", hi, "]"));
    }
    return i;
  }
  absl::StatusOr<bool> Bool(const char* name) const {
    const json* v = Get(name);
    if (v == nullptr) return false;
    if (!v->is_boolean()) return Bad(name, *v, "true or false");
    return v->get<bool>();
  }

 private:
  const json& body_;
  std::string* param_;
};

absl::StatusOr<std::vector<std::string>> ParseStop(const Fields& f) {
  const json* v = f.Get("stop");
  std::vector<std::string> stop;
  if (v == nullptr) return stop;
  std::vector<const json*> items;
  if (v->is_string()) {
    items.push_back(v);
  } else if (v->is_array()) {
    if (v->size() > kMaxStopStrings) {
      return f.Error("stop", absl::StrCat(v->size(), " strings; at most ",
                                          kMaxStopStrings));
    }
    for (const json& s : *v) items.push_back(&s);
  } else {
    return f.Bad("stop", *v, "a string or a list of strings");
  }
  for (const json* s : items) {
    if (!s->is_string()) return f.Bad("stop", *s, "a string");
    std::string text = s->get<std::string>();
    if (text.empty()) continue;  // Matches nothing; OpenAI ignores it too.
    if (text.size() > kMaxStopBytes) {
      return f.Error("stop", absl::StrCat("a stop string of ", text.size(),
                                          " bytes; at most ", kMaxStopBytes));
    }
    stop.push_back(std::move(text));
  }
  return stop;
}

// A message's content: a string, or a list of {"type": "text", "text"}
// parts (joined), as current clients send.
absl::StatusOr<std::string> ParseContent(const Fields& f, const json& c) {
  if (c.is_string()) return c.get<std::string>();
  if (c.is_null()) return std::string();
  if (!c.is_array()) return f.Bad("messages", c, "a content string or list");
  std::string text;
  for (const json& part : c) {
    const auto type = part.is_object() ? part.find("type") : part.end();
    if (!part.is_object() || type == part.end() || *type != "text" ||
        !part.contains("text") || !part["text"].is_string()) {
      return f.Bad("messages", part,
                   "a text part ({\"type\": \"text\", \"text\": ...}); "
                   "images and audio are not supported");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

absl::StatusOr<std::vector<ChatMessage>> ParseMessages(const Fields& f) {
  const json* v = f.Get("messages");
  if (v == nullptr) return f.Error("messages", "required");
  if (!v->is_array() || v->empty()) {
    return f.Bad("messages", *v, "a non-empty list of messages");
  }
  std::vector<ChatMessage> out;
  for (const json& m : *v) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return f.Bad("messages", m, "a message with a string \"role\"");
    }
    ChatMessage msg;
    msg.role = m["role"].get<std::string>();
    if (m.contains("tool_calls") || msg.role == "tool") {
      return f.Error("messages", "tool calls are not supported");
    }
    auto content = m.find("content");
    if (content != m.end()) {
      auto text = ParseContent(f, *content);
      if (!text.ok()) return text.status();
      msg.content = *std::move(text);
    }
    out.push_back(std::move(msg));
  }
  return out;
}

// Fields whose effect edgesplit does not implement: refused when set to
// anything but their no-op value, so no client believes it got one.
absl::Status RefuseUnsupported(const Fields& f) {
  if (const json* n = f.Get("n"); n != nullptr && *n != 1) {
    return f.Bad("n", *n, "1 (one choice per request)");
  }
  for (const char* name : {"echo", "logprobs"}) {
    if (const json* v = f.Get(name); v != nullptr && *v != false) {
      return f.Error(name, "not supported");
    }
  }
  for (const char* name : {"top_logprobs", "best_of", "suffix", "tools",
                           "functions", "response_format"}) {
    const json* v = f.Get(name);
    const bool noop =
        v == nullptr || (name == std::string("best_of") && *v == 1);
    if (!noop) return f.Error(name, "not supported");
  }
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    if (const json* v = f.Get(name);
        v != nullptr && !(v->is_number() && v->get<double>() == 0)) {
      return f.Error(name, "not supported (repetition_penalty is)");
    }
  }
  return absl::OkStatus();
}

absl::Status ParseModel(const Fields& f, CompletionRequest* r) {
  auto model = f.String("model", /*required=*/true);
  if (!model.ok()) return model.status();
  if (model->empty()) return f.Error("model", "empty");
  r->model_field = *model;
  const size_t colon = model->find(':');
  r->model = model->substr(0, colon);
  if (colon != std::string::npos) {
    r->adapter = model->substr(colon + 1);
    if (r->adapter.empty() || r->model.empty()) {
      return f.Error("model", absl::StrCat("\"", *model,
                                           "\" is not MODEL or MODEL:ADAPTER"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseSampling(const Fields& f, bool chat, SamplingOptions* s) {
  constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
  // OpenAI's defaults: 16 tokens for completions, no limit for chat.
  auto max_tokens = f.Int("max_tokens", 0, kMaxInt, chat ? -1 : 16);
  if (!max_tokens.ok()) return max_tokens.status();
  if (chat && *max_tokens < 0) {
    max_tokens = f.Int("max_completion_tokens", 0, kMaxInt, kUnlimitedTokens);
    if (!max_tokens.ok()) return max_tokens.status();
  }
  s->max_new_tokens = static_cast<int32_t>(*max_tokens);
  // One field at a time: the error and its "param" name the same one.
  ES_ASSIGN_OR_RETURN(const double temperature,
                      f.Number("temperature", 0, 2, 1));
  ES_ASSIGN_OR_RETURN(const double top_p, f.Number("top_p", 0, 1, 1));
  if (top_p == 0) return f.Error("top_p", "0 keeps no token; use > 0");
  ES_ASSIGN_OR_RETURN(const int64_t top_k, f.Int("top_k", -1, kMaxInt, 0));
  ES_ASSIGN_OR_RETURN(const double rep,
                      f.Number("repetition_penalty", 0.01, 100, 1));
  // No seed: a fresh one (sampling without one is not repeatable, as
  // with OpenAI); a given seed repeats its output.
  thread_local std::mt19937_64 fresh(std::random_device{}());
  ES_ASSIGN_OR_RETURN(const int64_t seed,
                      f.Int("seed", std::numeric_limits<int64_t>::min(),
                            std::numeric_limits<int64_t>::max(),
                            static_cast<int64_t>(fresh() >> 1)));
  s->temperature = static_cast<float>(temperature);
  s->top_p = static_cast<float>(top_p);
  s->top_k = static_cast<int32_t>(std::max<int64_t>(top_k, 0));
  s->repetition_penalty = static_cast<float>(rep);
  s->seed = static_cast<uint64_t>(seed);
  auto stop = ParseStop(f);
  if (!stop.ok()) return stop.status();
  s->stop = *std::move(stop);
  return absl::OkStatus();
}

json Usage(const CompletionResult& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.prompt_tokens + r.completion_tokens}};
}

json Envelope(const CompletionRequest& req, const ResponseId& id, bool chunk) {
  const char* object =
      req.chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
               : "text_completion";
  return {{"id", id.id},
          {"object", object},
          {"created", id.created},
          {"model", req.model_field}};
}

std::string Event(const json& j) {
  return absl::StrCat(
      "data: ", j.dump(-1, ' ', false, json::error_handler_t::replace), "\n\n");
}

// One streamed choice: chat's delta or the completion's text.
json Choice(const CompletionRequest& req, json delta_or_text,
            json finish_reason) {
  json c = {{"index", 0},
            {"logprobs", nullptr},
            {"finish_reason", std::move(finish_reason)}};
  c[req.chat ? "delta" : "text"] = std::move(delta_or_text);
  return c;
}

}  // namespace

absl::StatusOr<CompletionRequest> ParseCompletionRequest(absl::string_view body,
                                                         bool chat,
                                                         std::string* param) {
  auto parsed = ParseUntrustedJson(body, "request body", /*max_depth=*/8);
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object()) {
    return absl::InvalidArgumentError("request body: not a JSON object");
  }
  Fields f(*parsed, param);
  CompletionRequest r;
  r.chat = chat;
  if (absl::Status s = ParseModel(f, &r); !s.ok()) return s;
  if (absl::Status s = RefuseUnsupported(f); !s.ok()) return s;
  if (chat) {
    auto messages = ParseMessages(f);
    if (!messages.ok()) return messages.status();
    r.messages = *std::move(messages);
  } else {
    const json* p = f.Get("prompt");
    if (p == nullptr) return f.Error("prompt", "required");
    // A list of one string is the same prompt; several are n > 1 choices.
    if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) p = &(*p)[0];
    if (!p->is_string()) return f.Bad("prompt", *p, "a string");
    r.prompt = p->get<std::string>();
  }
  if (absl::Status s = ParseSampling(f, chat, &r.sampling); !s.ok()) return s;
  auto stream = f.Bool("stream");
  if (!stream.ok()) return stream.status();
  r.stream = *stream;
  if (const json* o = f.Get("stream_options"); o != nullptr) {
    if (!o->is_object()) return f.Bad("stream_options", *o, "an object");
    Fields so(*o, param);
    auto usage = so.Bool("include_usage");
    if (!usage.ok()) return usage.status();
    r.include_usage = *usage;
  }
  return r;
}

ResponseId NewResponseId(bool chat) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  ResponseId id;
  id.id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", absl::Hex(rng()),
                       absl::Hex(rng()));
  id.created = absl::ToUnixSeconds(absl::Now());
  return id;
}

std::string CompletionJson(const CompletionRequest& req, const ResponseId& id,
                           const CompletionResult& result) {
  json j = Envelope(req, id, /*chunk=*/false);
  json choice = {{"index", 0},
                 {"logprobs", nullptr},
                 {"finish_reason", result.finish_reason}};
  if (req.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", result.text}};
  } else {
    choice["text"] = result.text;
  }
  j["choices"] = json::array({std::move(choice)});
  j["usage"] = Usage(result);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string FirstChunkEvent(const CompletionRequest& req,
                            const ResponseId& id) {
  json j = Envelope(req, id, /*chunk=*/true);
  json first =
      req.chat ? json{{"role", "assistant"}, {"content", ""}} : json("");
  j["choices"] = json::array({Choice(req, std::move(first), nullptr)});
  return Event(j);
}

std::string TextChunkEvent(const CompletionRequest& req, const ResponseId& id,
                           absl::string_view text) {
  json j = Envelope(req, id, /*chunk=*/true);
  json piece =
      req.chat ? json{{"content", std::string(text)}} : json(std::string(text));
  j["choices"] = json::array({Choice(req, std::move(piece), nullptr)});
  return Event(j);
}

TextEvents::TextEvents(const CompletionRequest& req, const ResponseId& id) {
  // The event of a placeholder text, cut around it. The placeholder is a
  // string the JSON around it cannot contain (ids and model names have no
  // control characters left unescaped).
  constexpr absl::string_view kMark = "\x01mark\x01";
  const std::string whole = TextChunkEvent(req, id, kMark);
  const std::string quoted =
      json(std::string(kMark))
          .dump(-1, ' ', false, json::error_handler_t::replace);
  const size_t at = whole.find(quoted);
  prefix_ = whole.substr(0, at);
  suffix_ = whole.substr(at + quoted.size());
}

std::string TextEvents::Event(absl::string_view text) const {
  return absl::StrCat(prefix_,
                      json(std::string(text))
                          .dump(-1, ' ', false, json::error_handler_t::replace),
                      suffix_);
}

std::string FinalChunkEvents(const CompletionRequest& req, const ResponseId& id,
                             const CompletionResult& result) {
  json j = Envelope(req, id, /*chunk=*/true);
  json empty = req.chat ? json::object() : json("");
  j["choices"] =
      json::array({Choice(req, std::move(empty), result.finish_reason)});
  std::string out = Event(j);
  if (req.include_usage) {
    json u = Envelope(req, id, /*chunk=*/true);
    u["choices"] = json::array();
    u["usage"] = Usage(result);
    out += Event(u);
  }
  return out;
}

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

namespace {
json ErrorObject(const absl::Status& status, absl::string_view param) {
  const int http = HttpStatusFor(status);
  const char* type = http == 401   ? "authentication_error"
                     : http == 404 ? "invalid_request_error"
                     : http < 500  ? "invalid_request_error"
                                   : "server_error";
  json code = nullptr;
  if (status.code() == absl::StatusCode::kNotFound && param == "model") {
    code = "model_not_found";
  }
  return {{"error",
           {{"message", std::string(status.message())},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(std::string(param))},
            {"code", code}}}};
}
}  // namespace

std::string ErrorJson(const absl::Status& status, absl::string_view param) {
  return ErrorObject(status, param)
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string ErrorEvent(const absl::Status& status) {
  return Event(ErrorObject(status, ""));
}

std::string ModelsJson(const std::vector<std::string>& ids) {
  json data = json::array();
  for (const std::string& id : ids) {
    data.push_back({{"id", id},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "edgesplit"}});
  }
  return json{{"object", "list"}, {"data", std::move(data)}}.dump();
}

}  // namespace openai
}  // namespace edgesplit
