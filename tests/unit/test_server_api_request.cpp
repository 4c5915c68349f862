// OpenAI request bodies: what is accepted (and normalised), and that every bad input is one
// 400 naming the parameter.
#include <catch2/catch.hpp>

#include <string>

#include "runtime/server/api_request.h"

using namespace mt::server;
using json = nlohmann::json;

namespace {

const RequestLimits kLimits{4096, 64, 4};

ChatRequest chat_ok(const std::string& body) {
  auto r = parse_chat_request(body, kLimits);
  if (auto* e = std::get_if<ApiError>(&r)) FAIL("refused: " << e->message);
  return std::get<ChatRequest>(r);
}

ApiError chat_bad(const std::string& body) {
  auto r = parse_chat_request(body, kLimits);
  REQUIRE(std::holds_alternative<ApiError>(r));
  return std::get<ApiError>(r);
}

}  // namespace

TEST_CASE("a chat request with every served option is read as sent", "[server]") {
  const ChatRequest r = chat_ok(R"({
    "model": "deepseek", "messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "get_time", "arguments": "{\"tz\": \"UTC\"}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "12:00"}],
    "max_completion_tokens": 17, "temperature": 0.5, "top_p": 0.9, "seed": -3, "stop": ["\n\n", "END"],
    "stream": true, "stream_options": {"include_usage": true},
    "tools": [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
    "chat_template_kwargs": {"thinking": true}, "n": 1, "logprobs": false})");
  CHECK(r.model == "deepseek");
  REQUIRE(r.messages.size() == 4);
  CHECK(r.messages[0] == json({{"role", "system"}, {"content", "Be brief."}}));
  CHECK(r.messages[1]["content"] == "Hello, world");
  CHECK(r.messages[2]["content"] == "");
  CHECK(r.messages[2]["tool_calls"][0]["function"]["name"] == "get_time");
  CHECK(r.messages[2]["tool_calls"][0]["function"]["arguments"] == "{\"tz\": \"UTC\"}");
  CHECK(r.messages[3]["tool_call_id"] == "c1");
  REQUIRE(r.tools.size() == 1);
  CHECK(r.tools[0]["function"]["name"] == "get_time");
  CHECK(r.thinking);
  CHECK(r.gen.max_tokens == 17);
  CHECK(r.gen.temperature == 0.5);
  CHECK(r.gen.top_p == 0.9);
  CHECK(r.gen.seed == static_cast<uint64_t>(int64_t{-3}));
  CHECK(r.gen.stop == std::vector<std::string>{"\n\n", "END"});
  CHECK(r.gen.stream);
  CHECK(r.gen.include_usage);
}

TEST_CASE("chat defaults: OpenAI's temperature and top_p, no limit, not streamed", "[server]") {
  const ChatRequest r = chat_ok(R"({"messages": [{"role": "user", "content": "hi"}], "stop": "x",
                                    "thinking": {"type": "enabled"}})");
  CHECK(r.gen.temperature == 1.0);
  CHECK(r.gen.top_p == 1.0);
  CHECK_FALSE(r.gen.max_tokens);
  CHECK_FALSE(r.gen.seed);
  CHECK_FALSE(r.gen.stream);
  CHECK(r.gen.stop == std::vector<std::string>{"x"});
  CHECK(r.thinking);
  CHECK(r.tools.empty());
  CHECK(chat_ok(R"({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function",
                    "function": {"name": "f"}}], "tool_choice": "none"})").tools.empty());
}

TEST_CASE("every bad chat request is a 400 naming the parameter", "[server]") {
  struct Case {
    const char* body;
    const char* param;
  };
  const Case cases[] = {
      {R"({"messages": [{"role": "user", "content": "hi"}],)", ""},  // not JSON
      {R"([1, 2])", ""},
      {R"({})", "messages"},
      {R"({"messages": []})", "messages"},
      {R"({"messages": "hi"})", "messages"},
      {R"({"messages": [1]})", "messages[0]"},
      {R"({"messages": [{"role": "wizard", "content": "hi"}]})", "messages[0].role"},
      {R"({"messages": [{"content": "hi"}]})", "messages[0].role"},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})", "messages[0].content[0].type"},
      {R"({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"function": {"name": ""}}]}]})",
       "messages[0].tool_calls[0].function.name"},
      {R"({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}]})",
       "messages[0].tool_calls[0].function.arguments"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0})", "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000})", "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"})", "max_tokens"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "max_completion_tokens": 6})", "max_completion_tokens"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5})", "temperature"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"})", "temperature"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "top_p": 0})", "top_p"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "seed": 1.5})", "seed"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "seed": 1e300})", "seed"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "stop": ["a", "b", "c", "d", "e"]})", "stop"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "stop": [""]})", "stop"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "stop": 3})", "stop"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"})", "stream"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": 1}})", "stream_options.include_usage"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "n": 2})", "n"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "tools": {}})", "tools"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "code"}]})", "tools[0]"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"})", "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "thinking": "on"})", "thinking"},
      {R"({"messages": [{"role": "user", "content": "hi"}], "model": 7})", "model"},
  };
  for (const Case& c : cases) {
    INFO(c.body);
    const ApiError e = chat_bad(c.body);
    CHECK(e.status == 400);
    CHECK(e.type == "invalid_request_error");
    CHECK(e.param == c.param);
    CHECK_FALSE(e.message.empty());
    const json j = e.to_json();
    CHECK(j["error"]["message"] == e.message);
    CHECK(j["error"].contains("code"));
  }
  // Too many messages for the server's limit.
  json many = {{"messages", json::array()}};
  for (int i = 0; i < 65; ++i) many["messages"].push_back({{"role", "user"}, {"content", "x"}});
  CHECK(chat_bad(many.dump()).param == "messages");
}

TEST_CASE("completion requests: prompt forms and refusals", "[server]") {
  auto ok = [](const std::string& body) {
    auto r = parse_completion_request(body, kLimits);
    if (auto* e = std::get_if<ApiError>(&r)) FAIL("refused: " << e->message);
    return std::get<CompletionRequest>(r);
  };
  CHECK(ok(R"({"prompt": "Once upon", "max_tokens": 8})").prompt == "Once upon");
  CHECK(ok(R"({"prompt": ["Once upon"]})").prompt == "Once upon");
  for (auto [body, param] : {std::pair{R"({})", "prompt"}, {R"({"prompt": 3})", "prompt"},
                             {R"({"prompt": ["a", "b"]})", "prompt"}, {R"({"prompt": "a", "echo": true})", "echo"},
                             {R"({"prompt": "a", "suffix": "z"})", "suffix"}, {R"({"prompt": "a", "best_of": 3})", "best_of"},
                             {R"({"prompt": "a", "max_tokens": -1})", "max_tokens"}}) {
    INFO(body);
    auto r = parse_completion_request(body, kLimits);
    REQUIRE(std::holds_alternative<ApiError>(r));
    CHECK(std::get<ApiError>(r).param == param);
  }
}
